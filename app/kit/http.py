from fastapi import Request


def client_ip(request: Request) -> str:
    """The peer address. Behind a proxy, run uvicorn with --proxy-headers so this is the real client."""
    return request.client.host if request.client else "unknown"
