"""Paths, messages and errors shared by scripts/stack.py and the modules it uses."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
EMBEDDED = ROOT / "scripts" / "embedded"
# Resolved at import, before main() changes directory, so a relative PEERTEST_RUN_DIR means the caller's cwd.
RUN_DIR = Path(os.environ.get("PEERTEST_RUN_DIR") or ROOT / ".run").resolve()
LOG_DIR = RUN_DIR / "logs"
PID_DIR = RUN_DIR / "pids"
PY = sys.executable
VENV_BIN = Path(PY).parent


def say(msg: str) -> None:
    print(f"==> {msg}", file=sys.stderr, flush=True)


class StackError(RuntimeError):
    """A service failed to install, start or stay up."""


class Interrupted(BaseException):
    """Raised by our SIGINT/SIGTERM handler."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty log)"


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())
