"""scripts/stack.py as a process manager: a private `stack.py run` (own run dir, own ports,
none of the suite's services) restarts a killed worker, scheduler and Redis, stops on SIGTERM
without orphans, and ends the run (non-zero, no orphans) when the API dies."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What scripts/test and tests/conftest.py export for the suite; the private stack must start its own.
SUITE_VARS = ("MONGO_URI", "REDIS_URL", "STRIPE_API_BASE", "S3_ENDPOINT_URL", "STRIPE_SIMULATE_CONNECT",
              "MAIL_OUTBOX_DIR", "MONGO_DB", "ENVIRONMENT")
PORT_VARS = ("API_PORT", "MONGO_PORT", "REDIS_PORT", "S3_PORT", "LOCALSTRIPE_PORT")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting for its parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def wait_until(check: Callable[[], object], timeout: float, step: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(step)


def health_ok(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def redis_pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class PrivateStack:
    proc: subprocess.Popen
    run_dir: Path
    ports: dict[str, int]
    stderr_path: Path
    seen: set[int] = field(default_factory=set)  # every child pid read from a pidfile

    def pid(self, name: str) -> int | None:
        try:
            pid = int((self.run_dir / "pids" / f"{name}.pid").read_text())
        except (OSError, ValueError):
            return None
        self.seen.add(pid)
        return pid

    def new_live_pid(self, name: str, old: int, timeout: float = 10) -> int | None:
        def check() -> int | None:
            pid = self.pid(name)
            return pid if pid not in (None, old) and alive(pid) else None

        return wait_until(check, timeout)

    def leftovers(self) -> list[str]:
        """Processes still running that were started by this stack: a pid we saw, or any process
        whose environment carries this stack's PEERTEST_RUN_DIR (RQ work horses included)."""
        marker = f"PEERTEST_RUN_DIR={self.run_dir}\0".encode()
        found = {pid for pid in self.seen if alive(pid)}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    if marker in (entry / "environ").read_bytes() and alive(int(entry.name)):
                        found.add(int(entry.name))
                except OSError:
                    pass
        return [f"{pid}: {Path(f'/proc/{pid}/cmdline').read_bytes().replace(b'\0', b' ').decode(errors='replace')}"
                for pid in sorted(found) if alive(pid)]

    def report(self) -> str:
        """The supervisor's stderr and the tail of every child log, for assertion messages."""
        parts = [f"--- stack stderr\n{self.stderr_path.read_text(errors='replace')[-4000:]}"]
        for log in sorted((self.run_dir / "logs").glob("*.log")):
            parts.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(parts)

    def kill_everything(self) -> None:
        for pid in [self.proc.pid, *self.seen]:
            try:
                os.killpg(pid, signal.SIGKILL)  # the stack's group, and each child's own group
            except (ProcessLookupError, PermissionError):
                pass
        for line in self.leftovers():
            try:
                os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


@contextmanager
def private_stack(tmp_path: Path) -> Iterator[PrivateStack]:
    run_dir = tmp_path / "run"
    ports = dict(zip(PORT_VARS, free_ports(len(PORT_VARS)), strict=True))
    env = {k: v for k, v in os.environ.items() if k not in SUITE_VARS}
    env.update({k: str(v) for k, v in ports.items()}, PEERTEST_RUN_DIR=str(run_dir))
    stdout_path, stderr_path = tmp_path / "stack.stdout", tmp_path / "stack.stderr"
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "scripts/stack.py", "run"], cwd=ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err, process_group=0)
    stack = PrivateStack(proc, run_dir, ports, stderr_path)
    try:
        # The banner comes once every child has passed its ready check: supervision starts there.
        def up() -> bool:
            return proc.poll() is not None or "PeerTest Hub is running" in stdout_path.read_text()

        wait_until(up, 60, 0.25)
        assert proc.poll() is None and health_ok(ports["API_PORT"]), f"the stack did not come up\n{stack.report()}"
        for name in ("api", "worker", "scheduler", "redis", "mongo", "s3", "localstripe"):
            assert stack.pid(name), f"no pidfile for {name}\n{stack.report()}"
        yield stack
    finally:
        stack.kill_everything()


def test_restarts_killed_children_and_stops_cleanly(tmp_path):
    with private_stack(tmp_path) as stack:
        api_port, redis_port = stack.ports["API_PORT"], stack.ports["REDIS_PORT"]

        for name in ("worker", "scheduler"):
            old = stack.pid(name)
            os.kill(old, signal.SIGKILL)
            new = stack.new_live_pid(name, old)
            assert new, f"{name} was not restarted\n{stack.report()}"
            assert health_ok(api_port), stack.report()

        old = stack.pid("redis")
        os.kill(old, signal.SIGKILL)
        assert stack.new_live_pid("redis", old), f"redis was not restarted\n{stack.report()}"
        assert wait_until(lambda: redis_pong(redis_port), 10), f"redis is not back on {redis_port}\n{stack.report()}"

        stderr = stack.stderr_path.read_text()
        for name in ("worker", "scheduler", "redis"):
            assert f"RESTART {name}: pid " in stderr and f"{name} restarted as pid" in stderr, stderr
        assert "was killed by SIGKILL" in stderr
        # Logs are appended to on a restart, after a separator line, not truncated: the first
        # redis had logged "Ready to accept connections" before it could answer the ready check.
        redis_log = (stack.run_dir / "logs" / "redis.log").read_text()
        first, separator, second = redis_log.partition("restart #1 of redis (pid ")
        assert separator and "Ready to accept connections" in first and "Ready to accept" in second, redis_log
        assert "restart #1 of worker" in (stack.run_dir / "logs" / "worker.log").read_text()

        # Kill the worker and stop at once: the pending restart must not happen after stopping began.
        os.kill(stack.pid("worker"), signal.SIGKILL)
        stack.proc.send_signal(signal.SIGTERM)
        try:
            rc = stack.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the stack did not stop within 20 s\n{stack.report()}") from None
        assert rc == 0, stack.report()
        assert wait_until(lambda: not stack.leftovers(), 3), f"left behind: {stack.leftovers()}"
        assert sorted(p.name for p in (stack.run_dir / "pids").glob("*.pid")) == [], "pidfiles not removed"
        assert len(stack.seen) >= 10  # 7 children + 3 restarts, all seen and all gone


def test_dead_api_ends_the_run(tmp_path):
    with private_stack(tmp_path) as stack:
        os.kill(stack.pid("api"), signal.SIGKILL)
        try:
            rc = stack.proc.wait(timeout=25)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the stack kept running without its API\n{stack.report()}") from None
        assert rc != 0
        stderr = stack.stderr_path.read_text()
        assert "error: api (pid" in stderr and "api.log" in stderr, stderr
        assert "RESTART api" not in stderr
        assert stderr.index("stopping scheduler, worker, api") < stderr.index("stopping redis")
        assert wait_until(lambda: not stack.leftovers(), 3), f"left behind: {stack.leftovers()}"
