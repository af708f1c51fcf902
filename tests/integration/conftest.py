"""Integration fixtures: a real HTTP server in a thread, and ingest runs into tmp dirs."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from curate.config import Params, from_mapping
from curate.manifest import read_table
from curate.stages.ingest import IngestOptions, run_ingest

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

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
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

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
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


@pytest.fixture
def http_server() -> Iterator[ImageServer]:
    """A real threaded HTTP server on an ephemeral port, stopped after the test."""
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


def params_mapping(root: Path, sources: list[dict[str, Any]], workers: int = 1,
                   **ingest: Any) -> dict[str, Any]:
    """params.yaml content with the store and cache under `root`."""
    return {
        "workers": workers,
        "paths": {"store": str(root / "store"), "cache": str(root / "cache")},
        "ingest": {"sources": sources, **ingest},
    }


@pytest.fixture
def make_params() -> Callable[..., Params]:
    """`make_params(root, sources, workers=1, **ingest)` -> validated Params."""
    return lambda *args, **kwargs: from_mapping(Params, params_mapping(*args, **kwargs), "")


@pytest.fixture
def write_params() -> Callable[..., Path]:
    """`write_params(root, sources, workers=1, **ingest)` -> path of a params.yaml in `root`."""

    def write(root: Path, *args: Any, **kwargs: Any) -> Path:
        path = root / "params.yaml"
        root.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(params_mapping(root, *args, **kwargs)), encoding="utf-8")
        return path

    return write


class IngestResult:
    def __init__(self, summary: Any, out: Path) -> None:
        self.summary = summary
        self.out = out
        self.manifest: pd.DataFrame = read_table(out / "manifest.parquet")
        self.rejects: pd.DataFrame = read_table(out / "rejects.parquet")

    def table_bytes(self) -> tuple[bytes, bytes]:
        return ((self.out / "manifest.parquet").read_bytes(),
                (self.out / "rejects.parquet").read_bytes())

    def reasons(self) -> dict[str, str]:
        """source_uri -> reject reason."""
        return dict(zip(self.rejects["source_uri"], self.rejects["reason"], strict=True))

    def stored_uris(self) -> dict[str, list[str]]:
        """image_id -> every source URI that had its bytes."""
        return {row.image_id: list(row.source_uris) for row in self.manifest.itertuples()}


@pytest.fixture
def ingest() -> Callable[..., IngestResult]:
    """`ingest(params, out_dir, **IngestOptions)` runs the stage in-process and reads its tables."""

    def run(params: Params, out: Path, **options: Any) -> IngestResult:
        summary = run_ingest(params, IngestOptions(out_dir=out, **options))
        return IngestResult(summary, out)

    return run
