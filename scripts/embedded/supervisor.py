"""The Stack: starts the children, waits until they are ready, restarts the ones that die
(with backoff), and stops them all in tier order."""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from app.kit.stackfile import pid_alive

from .child import NOT_RESTARTED, Service, read_pidfile, remove_pidfile, write_pidfile
from .common import Interrupted, StackError, indent, say, tail

STOP_GRACE_S = 5.0

# Restart backoff: RESTART_DELAY_S after a first death, doubling up to RESTART_DELAY_MAX_S for a
# child that keeps dying; a child that stayed up RESTART_RESET_AFTER_S starts again at the minimum.
RESTART_DELAY_S = 0.5
RESTART_DELAY_MAX_S = 30.0
RESTART_RESET_AFTER_S = 60.0
SUPERVISE_TICK_S = 0.25


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "is running"
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


class Stack:
    """Starts services, waits for them, supervises them, stops them in tier order.

    Everything runs on the main thread: the supervision is a polling loop (watch() in the
    run and services modes, wait_for() around pytest or the bench). Spawning a child is a
    critical section in which SIGINT/SIGTERM are deferred, so a signal can never leave a
    child started but unrecorded; and once stop() has begun nothing is restarted.
    (Spawning from the main thread also matters for PR_SET_PDEATHSIG, which fires when the
    *thread* that forked the child exits.)
    """

    def __init__(self) -> None:
        self.services: list[Service] = []
        self.stopping = False
        self.cleanups: list[Callable[[], None]] = []
        self.pid_dir: Path | None = None
        self.deferring = False
        self.pending_signal: int | None = None

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """Defer SIGINT/SIGTERM (see on_signal in stack.py main) until the block is done."""
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
        if self.pending_signal is not None and not self.stopping:
            signum, self.pending_signal = self.pending_signal, None
            raise Interrupted(signum)

    def claim_pid_dir(self, pid_dir: Path) -> None:
        """Record our own pid, and drop pidfiles left by a stack that died without cleaning up."""
        pid_dir.mkdir(parents=True, exist_ok=True)
        own = pid_dir / "stack.pid"
        other = read_pidfile(own)
        if other is not None and other != os.getpid() and pid_alive(other):
            say(f"another stack (pid {other}) is using {pid_dir}; set PEERTEST_RUN_DIR to keep them apart")
        else:
            for stale in pid_dir.glob("*.pid"):
                stale.unlink(missing_ok=True)
        write_pidfile(own, os.getpid())
        self.pid_dir = pid_dir

    def start(self, services: list[Service], env: dict[str, str]) -> None:
        with self.critical():
            for svc in services:
                svc.start(env)
                self.services.append(svc)
        self.wait_ready(services)
        for svc in services:
            svc.supervised = True

    def wait_ready(self, services: list[Service]) -> None:
        pending = list(services)
        started = time.monotonic()
        while pending:
            for svc in list(pending):
                # A child that cannot start is a setup or code problem: restarting it forever would
                # hide it, so the stack fails instead (supervision begins once everything is ready).
                before = f", before it {svc.ready_what}" if svc.ready_what else ""
                if not svc.alive():
                    raise svc.failure(f"(pid {svc.proc.pid}) {describe_exit(svc.proc.returncode)} while "
                                      f"starting{before}, so the stack stops (a child that fails at start "
                                      "is not restarted)")
                if svc.is_ready():
                    say(f"{svc.name} ready ({time.monotonic() - started:.1f}s)")
                    pending.remove(svc)
                elif time.monotonic() - started > svc.timeout:
                    waiting = f" (it has not {svc.ready_what})" if svc.ready_what else ""
                    raise svc.failure(f"(pid {svc.proc.pid}) not ready after {svc.timeout:.0f}s{waiting}, "
                                      "so the stack stops")
            if pending:
                time.sleep(0.1)

    # ----------------------------------------------------------------- supervision

    def supervise(self) -> None:
        """One pass: notice deaths, restart the children whose backoff is over.

        Raises StackError when a child that is never restarted (mongo, api) has died.
        """
        for svc in self.services:
            if self.stopping or not svc.supervised:
                continue
            if svc.restart_at is None and not svc.alive():
                self._died(svc)
            elif svc.restart_at is not None and time.monotonic() >= svc.restart_at:
                self._restart(svc)
            elif svc.awaiting_ready:
                waited = time.monotonic() - svc.started_at
                if svc.is_ready():
                    svc.awaiting_ready = False
                    say(f"{svc.name} is back ({waited:.1f}s after the restart)")
                    if svc.after_restart is not None:
                        try:
                            say(f"{svc.name}: {svc.after_restart()}")
                        except StackError as err:
                            say(f"{svc.name}: {err}")
                elif waited > svc.timeout:
                    svc.awaiting_ready = False
                    say(f"{svc.name} still not ready {waited:.0f}s after its restart; see {svc.log_path}")

    def _died(self, svc: Service) -> None:
        assert svc.proc is not None
        uptime = time.monotonic() - svc.started_at
        how = describe_exit(svc.proc.returncode)
        # Reap whatever it left in its process group (an RQ work horse, a scheduler fork).
        svc.signal_group(signal.SIGKILL)
        if not svc.restartable:
            raise StackError(
                f"{svc.name} (pid {svc.proc.pid}) {how} after {uptime:.1f}s, so the stack stops. "
                f"{NOT_RESTARTED[svc.name]}.\nLast lines of {svc.log_path}:\n{tail(svc.log_path)}"
            )
        if uptime >= RESTART_RESET_AFTER_S:
            svc.streak = 0
        svc.streak += 1
        delay = min(RESTART_DELAY_MAX_S, RESTART_DELAY_S * 2 ** (svc.streak - 1))
        svc.restart_at = time.monotonic() + delay
        svc.awaiting_ready = False
        say(
            f"RESTART {svc.name}: pid {svc.proc.pid} {how} after {uptime:.1f}s; "
            f"restart #{svc.restarts + 1} in {delay:g}s; log: {svc.log_path}"
        )
        if svc.proc.returncode > 0:
            say(f"last lines of {svc.log_path}:\n{indent(tail(svc.log_path, 5))}")

    def _restart(self, svc: Service) -> None:
        assert svc.proc is not None
        previous = f"pid {svc.proc.pid} {describe_exit(svc.proc.returncode)}"
        stamp = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        separator = f"\n===== {stamp} restart #{svc.restarts + 1} of {svc.name} ({previous}) =====\n"
        with self.critical():
            if self.stopping:
                return
            svc.restarts += 1
            svc.restart_at = None
            try:
                svc.start(separator=separator)
            except StackError as err:  # e.g. out of file descriptors: try again later
                svc.restart_at = time.monotonic() + RESTART_DELAY_MAX_S
                say(f"{err}; trying again in {RESTART_DELAY_MAX_S:g}s")
                return
            svc.awaiting_ready = svc.ready is not None
        say(f"{svc.name} restarted as pid {svc.proc.pid} (restart #{svc.restarts})")

    def watch(self) -> None:
        """Supervise until a child that is never restarted dies (StackError) or a signal arrives."""
        while True:
            self.supervise()
            time.sleep(SUPERVISE_TICK_S)

    def wait_for(self, proc: subprocess.Popen, what: str) -> int:
        """Supervise while `proc` runs; return its exit code. If the stack fails, stop `proc` and raise."""
        while proc.poll() is None:
            try:
                self.supervise()
            except StackError:
                say(f"stopping {what} (pid {proc.pid}): the stack failed (error below)")
                stop_command(proc, signal.SIGTERM)
                raise
            time.sleep(SUPERVISE_TICK_S)
        return proc.returncode

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True  # from here on supervise() restarts nothing
        for tier in sorted({s.tier for s in self.services}):
            group = [s for s in reversed(self.services) if s.tier == tier and s.proc is not None]
            live = [s for s in group if s.proc.returncode is None]
            say("stopping " + ", ".join(s.name for s in group))
            for svc in live:
                svc.signal_group(signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            for svc in live:
                try:
                    svc.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    say(f"{svc.name} did not stop in {STOP_GRACE_S:.0f}s; killing it")
                # Also reap anything the child left in its group (e.g. an RQ work horse).
                svc.signal_group(signal.SIGKILL)
                try:
                    svc.proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    pass
            for svc in group:
                remove_pidfile(svc.pid_path, svc.proc.pid)
        if self.pid_dir is not None:
            remove_pidfile(self.pid_dir / "stack.pid", os.getpid())
        for cleanup in self.cleanups:
            cleanup()
        self.cleanups.clear()


def stop_command(proc: subprocess.Popen, sig: int) -> int:
    """Stop the mode's command (pytest, the bench): `sig` unless it is SIGINT, which it already got."""
    if sig != signal.SIGINT:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
