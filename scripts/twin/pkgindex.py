"""The package-index stand-in: a wheelhouse served as pip ``find-links``, which can refuse.

``python -m scripts.twin.pkgindex ADDRESS PORT WHEELHOUSE REFUSE_SECONDS``: nothing listens
for the first REFUSE_SECONDS (so connections are refused, as with an unreachable PyPI), then
the wheelhouse's directory listing (links to every wheel) is served over HTTP.
"""

from __future__ import annotations

import functools
import sys
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


def main(argv: list[str]) -> None:
    """Serve the wheelhouse after the refusal period."""
    address, port, wheelhouse, refuse_seconds = argv
    time.sleep(float(refuse_seconds))  # the fault itself: the index is down this long
    handler = functools.partial(SimpleHTTPRequestHandler, directory=wheelhouse)
    ThreadingHTTPServer((address, int(port)), handler).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
