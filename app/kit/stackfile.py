"""The env file `scripts/run` leaves for other commands (<run dir>/env). Its first line names the
stack's pid, so a reader can tell a live stack's file from one a killed stack left behind (SIGKILL
leaves no chance to remove it). Standard library only: the dev supervisor (scripts/embedded) writes
the file and `app.cli` reads it, and both use this one definition of the header."""

import os
import re

_OWNER = re.compile(r"^# .*\(stack pid (\d+)\)")


def header(pid: int, stamp: str) -> str:
    return f"# Written by scripts/run (stack pid {pid}) at {stamp}; removed when it stops."


def owner_pid(first_line: str) -> int | None:
    """The pid the header names, or None for a file without one."""
    match = _OWNER.match(first_line)
    return int(match.group(1)) if match else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, only not ours
    return True
