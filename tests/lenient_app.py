"""`python -m tests.lenient_app PORT`: the application behind the proxy in the attack tests, on wsgiref,
whose parser accepts what stricter ones refuse (control bytes in header values, any request target), as
many real applications' do. It answers every request 200 with what it saw, as JSON: the method, the path it
would route on (PATH_INFO, percent-decoded as WSGI gives it), and the request's headers.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items() if key.startswith("HTTP_")}
    seen = {
        "method": environ["REQUEST_METHOD"],
        "path": environ.get("PATH_INFO", ""),
        "headers": headers,
    }
    body = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # one line per request would flood the test log
        pass


def main(port: int) -> None:
    with make_server("127.0.0.1", port, application, handler_class=_QuietHandler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]))
