"""Periodic work, registered where it is defined:

    @periodic.every(lambda s: s.outbox_sweep_seconds)
    async def sweep() -> int: ...

The scheduler process (workers/scheduler.py) schedules every registered task. Each one is a sweep:
it finds due items and hands out one job per item, so a missed tick only delays work and a
repeated one does nothing.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from app.config import Settings, get_settings
from app.kit.queue import HIGH

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Periodic:
    func: str  # dotted path
    queue: str
    every: Callable[[Settings], float] | None = None  # seconds, read from the settings at registration
    cron: str | None = None
    timeout: int | None = None  # seconds a run may take (RQ's default is 180)

    def interval_seconds(self) -> int | None:
        return max(1, int(self.every(get_settings()))) if self.every else None


_registered: dict[str, Periodic] = {}


def every(seconds: Callable[[Settings], float] | float, *, queue: str = HIGH,
          timeout: int | None = None) -> Callable[[F], F]:
    interval = seconds if callable(seconds) else (lambda _s: seconds)
    return _register(lambda path: Periodic(path, queue, every=interval, timeout=timeout))


def cron(expression: str, *, queue: str = HIGH, timeout: int | None = None) -> Callable[[F], F]:
    return _register(lambda path: Periodic(path, queue, cron=expression, timeout=timeout))


def _register(make: Callable[[str], Periodic]) -> Callable[[F], F]:
    def decorate(fn: F) -> F:
        path = f"{fn.__module__}.{fn.__qualname__}"
        _registered[path] = make(path)
        return fn

    return decorate


def registered() -> list[Periodic]:
    return [_registered[name] for name in sorted(_registered)]
