"""One child process of the stack (a Service): how it starts, its log and pidfile, and the
state the supervisor keeps about it."""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .common import LOG_DIR, PID_DIR, ROOT, StackError, tail

# Stop tiers: lower stops first. Workers retry forever if Redis goes first.
TIER_APP, TIER_SERVICE, TIER_REDIS = 0, 1, 2

# Children whose death ends the run instead of restarting them, and why.
NOT_RESTARTED = {
    "mongo": "mongo is never restarted: its memory engine held every balance and document, and a "
    "fresh one would silently start empty",
    "api": "the api is never restarted: a crashing API is a bug to see, not to hide",
}


def read_pidfile(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def write_pidfile(path: Path, pid: int) -> None:
    """Write atomically, so `kill $(cat ...)` never reads half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(path)


def remove_pidfile(path: Path, pid: int | None) -> None:
    """Remove the pidfile if it still names `pid` (another stack may have taken it over)."""
    if pid is not None and read_pidfile(path) == pid:
        path.unlink(missing_ok=True)


def _die_with_parent() -> None:
    """In the child: own process group, and SIGTERM if the supervisor dies (Linux)."""
    os.setpgrp()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class Service:
    name: str
    argv: list[str]
    ready: Callable[[], bool] | None  # None: up as soon as it runs
    port: int | None = None
    ready_what: str = ""  # what the ready check waits for, for messages ("registered with Redis")
    env: dict[str, str] = field(default_factory=dict)
    tier: int = TIER_SERVICE
    timeout: float = 30.0
    log_dir: Path = LOG_DIR
    pid_dir: Path = PID_DIR
    proc: subprocess.Popen | None = None
    # Supervision state.
    base_env: dict[str, str] = field(default_factory=dict, repr=False)
    supervised: bool = False  # set once it was ready; only then are deaths handled
    started_at: float = 0.0  # time.monotonic() of the last start
    started_wall: float = 0.0  # time.time() just before the last start (ready checks compare Redis times)
    restarts: int = 0  # how many times it was restarted in this run
    streak: int = 0  # consecutive quick deaths; drives the backoff
    restart_at: float | None = None  # a dead child waiting for its backoff to end
    awaiting_ready: bool = False  # restarted, not yet answering its ready check
    # Runs once a restarted child is ready again, to put back what the stack set up on it the
    # first time (the S3 bucket, the Stripe webhook); returns a note for the log line.
    after_restart: Callable[[], str] | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        return self.pid_dir / f"{self.name}.pid"

    @property
    def restartable(self) -> bool:
        return self.name not in NOT_RESTARTED

    def start(self, base_env: dict[str, str] | None = None, *, separator: str | None = None) -> None:
        """Start the child; a restart (separator given) appends to its log instead of truncating it."""
        if base_env is not None:
            self.base_env = base_env
        try:
            with open(self.log_path, "wb" if separator is None else "ab") as log:
                if separator is not None:
                    log.write(separator.encode())
                    log.flush()
                self.started_wall = time.time()
                self.proc = subprocess.Popen(
                    self.argv,
                    cwd=ROOT,
                    env={**self.base_env, **self.env},
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent,
                )
        except OSError as err:
            raise StackError(f"could not start {self.name} ({shlex.join(self.argv[:2])}): {err}") from err
        self.started_at = time.monotonic()
        write_pidfile(self.pid_path, self.proc.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def is_ready(self) -> bool:
        return self.ready is None or self.ready()

    def signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def failure(self, what: str) -> StackError:
        return StackError(f"{self.name} {what}; last lines of {self.log_path}:\n{tail(self.log_path)}")

    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None
