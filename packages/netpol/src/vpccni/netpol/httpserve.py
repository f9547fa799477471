"""A small HTTP server for probes, introspection and metrics: GET routes to functions returning
(status, content type, body). One per listen address; started and stopped by the entry point."""

from __future__ import annotations

import json
import logging
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

Response = tuple[int, str, bytes]
Route = Callable[[Mapping[str, str]], Response]


def json_response(body: Any, status: int = 200) -> Response:
    return status, "application/json", (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()


def text_response(body: str, status: int = 200) -> Response:
    return status, "text/plain; charset=utf-8", body.encode()


def split_address(address: str) -> tuple[str, int]:
    """`host:port` or `:port` (every address)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class HttpServer:
    def __init__(self, address: str, routes: Mapping[str, Route], *, name: str) -> None:
        self._address = address
        self._routes = dict(routes)
        self._name = name
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return int(self._httpd.server_address[1])

    def start(self) -> HttpServer:
        routes = self._routes

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s %s", self.address_string(), format % args)

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
                route = routes.get(url.path)
                if route is None:
                    status, ctype, body = text_response(
                        f"no such path {url.path}; try {sorted(routes)}\n", 404
                    )
                else:
                    try:
                        status, ctype, body = route(query)
                    except Exception as exc:  # a bug must answer, not hang the client
                        log.exception("GET %s failed", self.path)
                        status, ctype, body = text_response(f"{type(exc).__name__}: {exc}\n", 500)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        host, port = split_address(self._address)
        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=self._name, daemon=True)
        self._thread.start()
        log.info("%s listening on %s:%d", self._name, host, self.port)
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
