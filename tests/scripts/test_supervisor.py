"""scripts/stack.py as a process manager: a private `stack.py run` (own run dir, own ports,
none of the suite's services) restarts a killed worker, scheduler and Redis, stops on SIGTERM
without orphans, and ends the run (non-zero, no orphans) when the API dies."""

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.fixtures.private_stack import PrivateStack, health_ok, wait_until


def redis_pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def private_stack(tmp_path: Path) -> Iterator[PrivateStack]:
    """A private stack that is up and healthy (supervision starts at its banner); killed at the end."""
    stack = PrivateStack(tmp_path)
    try:
        stack.start(timeout=60)
        assert health_ok(stack.api), f"the stack did not come up\n{stack.report()}"
        yield stack
    finally:
        stack.kill_everything()


def test_restarts_killed_children_and_stops_cleanly(tmp_path):
    with private_stack(tmp_path) as stack:
        redis_port = stack.ports["REDIS_PORT"]

        for name in ("worker", "scheduler"):
            old = stack.pid(name)
            os.kill(old, signal.SIGKILL)
            new = stack.new_live_pid(name, old)
            assert new, f"{name} was not restarted\n{stack.report()}"
            assert health_ok(stack.api), stack.report()

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
        rc = stack.stop(timeout=20)
        assert rc is not None, f"the stack did not stop within 20 s\n{stack.report()}"
        assert rc == 0, stack.report()
        assert wait_until(lambda: not stack.leftovers(), 3), f"left behind: {stack.leftover_commands()}"
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
        assert stderr.index("stopping scheduler, worker-low, worker, api") < stderr.index("stopping redis")
        assert wait_until(lambda: not stack.leftovers(), 3), f"left behind: {stack.leftover_commands()}"
