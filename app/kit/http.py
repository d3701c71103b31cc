"""The client's address for rate limits, trusting X-Forwarded-For only from the proxies that
FORWARDED_ALLOW_IPS names."""

import ipaddress
from functools import lru_cache

from fastapi import Request

from app.config import get_settings, parse_networks

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@lru_cache(maxsize=8)
def _trusted(setting: str) -> tuple[bool, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]]:
    return parse_networks(setting)


def _parse(address: str) -> Address | None:
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return None
    return ip.ipv4_mapped or ip if isinstance(ip, ipaddress.IPv6Address) else ip


def _is_trusted(ip: Address | None) -> bool:
    trust_all, networks = _trusted(get_settings().forwarded_allow_ips)
    return ip is not None and (trust_all or any(ip in network for network in networks))


def _key(ip: Address) -> str:
    """IPv6 clients are limited by their /64: one subscriber holds a whole /64 and could rotate through it."""
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def client_ip(request: Request) -> str:
    """The rate-limit identity of the client: the peer; behind trusted proxies, the nearest address in
    X-Forwarded-For that is not itself a trusted proxy (the leftmost entries are the client's to forge)."""
    peer = _parse(request.client.host) if request.client else None
    if peer is None:
        return request.client.host if request.client else "unknown"
    if not _is_trusted(peer):
        return _key(peer)
    hops = [hop for value in request.headers.getlist("x-forwarded-for") for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        ip = _parse(hop)
        if ip is None:
            return _key(peer)  # a garbled chain: fall back to the proxy itself rather than trust the rest
        if not _is_trusted(ip):
            return _key(ip)
    return _key(peer)
