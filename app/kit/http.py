"""The client's address, trusting X-Forwarded-For only from the proxies FORWARDED_ALLOW_IPS names."""

import ipaddress
from functools import lru_cache

from fastapi import Request

from app.config import get_settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def _trusted(setting: str) -> tuple[bool, tuple[Network, ...]]:
    entries = [item.strip() for item in setting.split(",") if item.strip()]
    return "*" in entries, tuple(ipaddress.ip_network(item, strict=False) for item in entries if item != "*")


def _is_trusted(address: str) -> bool:
    trust_all, networks = _trusted(get_settings().forwarded_allow_ips)
    if trust_all:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_ip(request: Request) -> str:
    """The peer address; behind trusted proxies, the nearest address in X-Forwarded-For that is not
    itself a trusted proxy (the leftmost entries are client-supplied and may be forged)."""
    peer = request.client.host if request.client else "unknown"
    if not _is_trusted(peer):
        return peer
    hops = [hop.strip() for hop in ",".join(request.headers.getlist("x-forwarded-for")).split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop):
            return hop
    return hops[0] if hops else peer
