"""Fault-injection seams: named points in the code where a test makes a real fault happen.

    await faults.hit("payouts.transfer.after_provider_call")

does nothing unless a fault is armed at that point. Tests arm one in-process with `inject()`, or
in a child process (a real worker) through the FAULTS setting, e.g.
FAULTS="payouts.transfer.after_provider_call=kill_worker". Outside dev and test nothing is armed.

Actions: `raise` (a RuntimeError), `kill_worker` (SIGKILL this process and its parent worker, as
a crashed machine would), `sleep:<seconds>`, or any callable given to inject().
"""

import asyncio
import inspect
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.config import get_settings


class InjectedFault(RuntimeError):
    """Raised by the `raise` action."""


@dataclass
class _Armed:
    action: Callable[[], Any]
    times: int | None  # None: every hit


_armed: dict[str, _Armed] = {}
_env_loaded = False


def inject(point: str, action: Callable[[], Any] | str = "raise", *, times: int | None = 1) -> None:
    """Arm `point`: the next `times` hits (None: every hit) run `action`."""
    _armed[point] = _Armed(_action(action) if isinstance(action, str) else action, times)


def clear() -> None:
    _armed.clear()


async def hit(point: str) -> None:
    _load_from_settings()
    armed = _armed.get(point)
    if armed is None:
        return
    if armed.times is not None:
        armed.times -= 1
        if armed.times <= 0:
            del _armed[point]
    outcome = armed.action()
    if inspect.isawaitable(outcome):
        await outcome


def _action(spec: str) -> Callable[[], Any]:
    if spec == "raise":
        def fail() -> None:
            raise InjectedFault("injected fault")
        return fail
    if spec == "kill_worker":
        return _kill_worker
    if spec.startswith("sleep:"):
        seconds = float(spec.split(":", 1)[1])
        return lambda: asyncio.sleep(seconds)
    raise ValueError(f"unknown fault action {spec!r}")


def _kill_worker() -> None:
    """SIGKILL the RQ work horse and the worker that forked it: nothing gets to clean up."""
    parent = os.getppid()
    if parent > 1:
        os.kill(parent, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _load_from_settings() -> None:
    global _env_loaded
    if _env_loaded:
        return
    _env_loaded = True
    settings = get_settings()
    if not settings.faults or settings.environment not in ("dev", "test"):
        return
    for item in settings.faults.split(","):
        point, _, spec = item.strip().partition("=")
        if point:
            inject(point, spec or "raise", times=None)
