"""Loopback ports for the services, and the checks that tell when a service is ready."""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request
from collections.abc import Callable

_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port, never the same one twice in this run."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_from_env(var: str, default: int | None = None) -> int:
    """Port from $var, else `default` if it is free, else any free port."""
    if os.environ.get(var):
        return int(os.environ[var])
    if default is not None and port_is_free(default):
        return default
    return free_port()


def tcp_ready(port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    return check


def redis_ready(address: tuple[str, int] | str) -> Callable[[], bool]:
    """PING over TCP (host, port) or a unix socket path."""

    def check() -> bool:
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                s.connect(address)
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    return check


def http_ready(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    return check
