"""scripts/run as an operator meets it: API_PORT=0 picks a free port and says which; the settings
it chose land in <run dir>/env (removed at the end), which scripts/cli reads; a fresh in-memory
database starts with an empty outbox; the workers and the scheduler are ready only once they have
registered with Redis; and a worker that crashes at start fails the run loudly instead of being
restarted forever."""

import os
import re
import stat
import subprocess
from pathlib import Path

import redis

from scripts.embedded.runfile import write_env_file
from tests.fixtures.private_stack import BANNER, ROOT, SUITE_VARS, PrivateStack, health_ok, wait_until

STACK_KEYS = ("ENVIRONMENT", "API_PORT", "API_URL", "PUBLIC_BASE_URL", "MONGO_URI", "REDIS_URL", "S3_ENDPOINT_URL",
              "STRIPE_API_BASE", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "STRIPE_SIMULATE_CONNECT",
              "MAIL_OUTBOX_DIR", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def scripts_cli(run_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """scripts/cli with none of the suite's settings: everything must come from the run dir's env file."""
    env = {k: v for k, v in os.environ.items() if k not in SUITE_VARS} | {"PEERTEST_RUN_DIR": str(run_dir),
                                                                          "COLUMNS": "200"}
    return subprocess.run(["bash", "scripts/cli", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


def test_free_port_env_file_fresh_outbox_and_real_readiness(tmp_path):
    stack = PrivateStack(tmp_path, {"API_PORT": "0"}, script=True)
    outbox = stack.mail_dir
    outbox.mkdir(parents=True)
    (outbox / "Mon_01_Dec_2026-old.eml").write_text("To: gone@example.com\nToken: stale\n")
    (outbox / "notes.txt").write_text("not a mail")
    # Left by a stack that was SIGKILLed: it names a pid that is not running.
    stack.env_file.write_text("# Written by scripts/run (stack pid 999999999) at then; removed when it stops.\n"
                              "MONGO_URI=mongodb://127.0.0.1:9/\n")
    try:
        stack.start(timeout=90)
        settings = stack.run_env()

        # 1. API_PORT=0: a real port, printed, written and answering.
        port = int(settings["API_PORT"])
        assert port != 0 and settings["API_URL"] == f"http://127.0.0.1:{port}", settings
        assert f"  API            http://127.0.0.1:{port}\n" in stack.stdout_path.read_text()
        assert health_ok(settings["API_URL"]), stack.report()

        # 2. The env file: the settings it chose, KEY=VALUE, only for its owner, naming the stack's pid.
        missing = [key for key in STACK_KEYS if not settings.get(key)]
        assert not missing, settings
        assert settings["ENVIRONMENT"] == "dev" and settings["STRIPE_SIMULATE_CONNECT"] == "true"
        assert settings["MAIL_OUTBOX_DIR"] == str(outbox)
        assert settings["MONGO_URI"] != "mongodb://127.0.0.1:9/"  # the stale file was replaced
        text = stack.env_file.read_text()
        assert f"(stack pid {stack.proc.pid})" in text.splitlines()[0]
        assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*=\S+", line) for line in text.splitlines() if not line.startswith("#"))
        assert stat.S_IMODE(stack.env_file.stat().st_mode) == 0o600

        # 5. A fresh in-memory database starts with an empty outbox (only mails are removed).
        assert sorted(p.name for p in outbox.iterdir()) == ["notes.txt"]
        assert "cleared 1 old mail(s)" in stack.stderr_path.read_text()

        # 6. Ready means registered with Redis: by the banner both workers (by pid) and the scheduler's jobs are there.
        r = redis.Redis.from_url(settings["REDIS_URL"], decode_responses=True)
        registered = {r.hget(key, "pid") for key in r.smembers("rq:workers")}
        assert {str(stack.pid("worker")), str(stack.pid("worker-low"))} <= registered, registered
        assert any(j.startswith("periodic-") for j in r.zrange("rq:scheduler:scheduled_jobs", 0, -1))
        r.close()
        stderr = stack.stderr_path.read_text()
        for name in ("worker", "worker-low", "scheduler", "api"):
            assert f"==> {name} ready (" in stderr

        # 3. scripts/cli reaches this stack through the env file alone.
        made = scripts_cli(stack.run_dir, "create-admin", "root@example.com", "admin-pass-2026")
        assert made.returncode == 0 and "admin created" in made.stdout, made.stdout + made.stderr
        checked = scripts_cli(stack.run_dir, "ledger-check")
        assert checked.returncode == 0 and "ok=True" in checked.stdout, checked.stdout + checked.stderr
    finally:
        rc = stack.stop(timeout=25)
        stack.kill_everything()
    assert rc == 0, stack.report()
    assert not stack.env_file.exists(), "the env file outlived its stack"
    gone = scripts_cli(stack.run_dir, "ledger-check")  # no env file now: production defaults, refused in one line
    assert gone.returncode != 0 and gone.stderr.count("\n") == 1 and "scripts/run" in gone.stderr, gone.stderr


SITECUSTOMIZE = '''\
import os, sys
# Injected by tests/scripts/test_run_operator.py: the high,default worker dies at start.
if b"workers.worker\\0--queues\\0high,default" in open("/proc/self/cmdline", "rb").read():
    sys.stderr.write("injected crash at start\\n")
    os._exit(3)
'''


def test_worker_crashing_at_start_fails_the_run(tmp_path):
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(SITECUSTOMIZE)
    stack = PrivateStack(tmp_path, {"PYTHONPATH": str(inject)}, script=True)
    try:
        stack.launch()
        try:
            rc = stack.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the stack kept going with a worker that cannot start\n{stack.report()}") from None
        stderr = stack.stderr_path.read_text()
        assert rc != 0, stderr
        assert BANNER not in stack.stdout_path.read_text()
        log = stack.run_dir / "logs" / "worker.log"
        assert re.search(r"error: worker \(pid \d+\) exited with code 3 while starting, before it registered with "
                         r"Redis", stderr), stderr
        assert str(log) in stderr and "injected crash at start" in stderr, stderr
        assert "RESTART worker" not in stderr and "restarted as pid" not in stderr, stderr
        assert not stack.env_file.exists()
        assert wait_until(lambda: not stack.leftovers(), 5), f"left behind: {stack.leftover_commands()}"
    finally:
        stack.kill_everything()


def test_the_env_file_is_private_even_over_a_leftover_tmp(tmp_path):
    """A world-readable .env.tmp, left by an interrupted write or planted, does not lend the env file its mode."""
    (tmp_path / ".env.tmp").write_text("")
    os.chmod(tmp_path / ".env.tmp", 0o644)
    path = write_env_file({"JWT_SECRET": "s" * 40, "ENCRYPTION_KEY": "k" * 44}, tmp_path / "env")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
