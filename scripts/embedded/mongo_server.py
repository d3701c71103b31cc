"""The embedded MongoDB stand-in: mongoeco's wire server with its memory engine.

mongoeco has no command-line entry point, so scripts/stack.py runs this file:

    python scripts/embedded/mongo_server.py PORT

It listens on 127.0.0.1:PORT only and keeps every document in memory: when this process
ends, the data is gone. That is why the supervisor never restarts it (a fresh one would
silently start empty); a dead mongo ends the run instead.
"""

import asyncio
import sys

from mongoeco.engines import MemoryEngine
from mongoeco.wire import AsyncMongoEcoProxyServer


async def serve(port: int) -> None:
    server = AsyncMongoEcoProxyServer(engine=MemoryEngine(), host="127.0.0.1", port=port)
    address = await server.start()
    print("mongoeco listening on", address.uri, flush=True)
    await asyncio.Event().wait()


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python scripts/embedded/mongo_server.py PORT")
    asyncio.run(serve(int(argv[0])))


if __name__ == "__main__":
    main(sys.argv[1:])
