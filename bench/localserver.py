"""A real threaded HTTP server on 127.0.0.1 that tests and benchmarks script route by route.

`routes` maps a path to `route(handler, n)`, where `n` counts the requests for that path so far
(a route can fail its first attempts and then answer); `hits` counts them for the checks.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Route = Callable[["_Handler", int], None]  # (request handler, how many times this path was hit)


def respond(h: BaseHTTPRequestHandler, body: bytes = b"", *, status: int = 200,
            content_type: str = "image/jpeg", length: int | None = None,
            headers: dict[str, str] | None = None) -> None:
    """Send one response; `length=-1` omits Content-Length (body ends when the socket closes)."""
    h.send_response(status)
    h.send_header("Content-Type", content_type)
    if length != -1:
        h.send_header("Content-Length", str(len(body) if length is None else length))
    for key, value in (headers or {}).items():
        h.send_header(key, value)
    h.end_headers()
    h.wfile.write(body)


class _Handler(BaseHTTPRequestHandler):
    server: ImageServer
    protocol_version = "HTTP/1.0"  # one request per connection: closing ends the body

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        with self.server.lock:
            self.server.hits[path] += 1
            n = self.server.hits[path]
        route = self.server.routes.get(path)
        try:
            if route is None:
                respond(self, b"<html>not found</html>", status=404, content_type="text/html")
            else:
                route(self, n)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeouts): expected

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ImageServer(ThreadingHTTPServer):
    """Serves `routes` on 127.0.0.1 and counts requests per path in `hits`."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    respond = staticmethod(respond)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def serve_bytes(self, path: str, body: bytes, content_type: str = "image/jpeg") -> str:
        self.routes[path] = lambda h, n: respond(h, body, content_type=content_type)
        return self.url(path)

    def sleep(self, seconds: float) -> None:
        """Sleep in a handler, cut short when the server shuts down."""
        self.stopping.wait(seconds)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients dropping connections on purpose are not errors here


@contextlib.contextmanager
def serving() -> Iterator[ImageServer]:
    """An `ImageServer` on an ephemeral port of 127.0.0.1, stopped on exit."""
    server = ImageServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
