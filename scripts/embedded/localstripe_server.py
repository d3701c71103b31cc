"""The embedded Stripe stand-in: localstripe on loopback, without its disk store.

`localstripe --port P` binds every interface ('::') and pickles its whole store to
/tmp/localstripe.pickle on every write (and reloads it at start, so two checkouts would
share state). This wrapper runs localstripe's aiohttp app itself, on 127.0.0.1 only, with
Store.dump_to_disk and Store.try_load_from_disk turned into no-ops:

    python scripts/embedded/localstripe_server.py PORT

Like the real test mode it is memory only; `DELETE /_config/data` clears it.
"""

import logging
import sys

import localstripe.resources as resources
from aiohttp import web

# Patch the class before localstripe.server is imported, so nothing there touches the disk.
resources.Store.dump_to_disk = lambda self: None
resources.Store.try_load_from_disk = lambda self: None

from localstripe import server  # noqa: E402


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python scripts/embedded/localstripe_server.py PORT")
    logging.basicConfig(level=logging.INFO)
    web.run_app(server.app, host="127.0.0.1", port=int(argv[0]), access_log=logging.getLogger("aiohttp.access"))


if __name__ == "__main__":
    main(sys.argv[1:])
