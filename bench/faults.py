"""A scraping run against a server that misbehaves on a seeded 30% of its URLs.

Each faulty URL fails in one way (connection reset, 500, 503 or 429 with Retry-After, a
stall, a truncated body, a Content-Length that lies, a slow drip) a few times and then
answers, or keeps failing for good (a redirect loop, a permanent 500, a 404). Used by
`tests/integration/test_scrape_faults.py` and `bench/reliability.py`.
"""

from __future__ import annotations

import io
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench.localserver import ImageServer

TIMEOUT_S = 0.6
RETRIES = 3
#: fault -> (attempts it fails before answering, or None: never; the reason it then ends in)
FAULTS: dict[str, tuple[int | None, str | None]] = {
    "reset": (2, None), "http_500": (1, None), "http_503": (2, None), "http_429": (1, None),
    "stall": (1, None), "truncated": (1, None), "lying_length": (1, None), "drip": (1, None),
    "redirect_loop": (None, "too_many_redirects"), "always_500": (None, "http_500"),
    "gone": (None, "http_404"),
}


@dataclass
class FaultRun:
    expected: dict[str, str | None]  # URL -> reject reason it must end in (None: stored)
    faults: dict[str, int]  # fault kind -> URLs with it
    stored: set[str]
    rejected: dict[str, str]
    seconds: float

    @property
    def recoverable(self) -> list[str]:
        return [u for u, r in self.expected.items() if r is None]

    @property
    def unaccounted(self) -> set[str]:
        return set(self.expected) - self.stored - set(self.rejected)


def _photo(seed: int) -> bytes:
    small = np.random.default_rng(seed).integers(0, 256, (9, 12, 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((96, 72), Image.Resampling.BILINEAR).save(buf, "JPEG")
    return buf.getvalue()


def _reset(h) -> None:
    """Close the connection with a TCP RST and no response."""
    h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    h.close_connection = True
    h.connection.close()


def _route(server: ImageServer, fault: str, body: bytes):
    fails, _ = FAULTS[fault]
    respond = server.respond

    def failing(h) -> None:
        if fault == "reset":
            _reset(h)
        elif fault in ("http_500", "always_500"):
            respond(h, b"oops", status=500, content_type="text/plain")
        elif fault == "http_503":
            respond(h, b"busy", status=503, content_type="text/plain",
                    headers={"Retry-After": "0"})
        elif fault == "http_429":
            respond(h, status=429, headers={"Retry-After": "0.05"})
        elif fault == "stall":
            server.sleep(3 * TIMEOUT_S)
        elif fault == "truncated":
            respond(h, body[: len(body) // 3], length=len(body))
        elif fault == "lying_length":  # declares more than it sends, then closes
            respond(h, body, length=len(body) + 5000)
        elif fault == "drip":  # headers, then a byte at a time, past the attempt's deadline
            respond(h, b"", length=len(body))
            for i in range(len(body)):
                h.wfile.write(body[i:i + 1])
                h.wfile.flush()
                if server.stopping.wait(0.05):
                    return
        elif fault == "redirect_loop":
            respond(h, status=302, headers={"Location": h.path})
        elif fault == "gone":
            respond(h, status=404)

    def route(h, n: int) -> None:
        if fails is None or n <= fails:
            failing(h)
        else:
            respond(h, body)

    return route


def run_against_faults(server: ImageServer, root: Path, n_urls: int = 120, seed: int = 30,
                       workers: int = 1) -> FaultRun:
    """Serve `n_urls` photos, 30% of them faulty (every kind at least once), and ingest them."""
    from core.config import from_mapping
    from core.manifest import read_table
    from curate.config import Params
    from curate.stages.ingest import IngestOptions, run_ingest

    rng = np.random.default_rng(seed)
    faulty = set(rng.choice(n_urls, size=int(0.3 * n_urls), replace=False).tolist())
    kinds = iter(list(rng.permutation(list(FAULTS))) * n_urls)  # every kind, then round robin
    expected: dict[str, str | None] = {}
    faults: dict[str, int] = {}
    for i in range(n_urls):
        path = f"/img/{i:03d}.jpg"
        body = _photo(seed * 100_000 + i)
        if i in faulty:
            fault = str(next(kinds))
            faults[fault] = faults.get(fault, 0) + 1
            server.routes[path] = _route(server, fault, body)
            expected[server.url(path)] = FAULTS[fault][1]
        else:
            server.serve_bytes(path, body)
            expected[server.url(path)] = None
    root.mkdir(parents=True, exist_ok=True)
    (root / "urls.txt").write_text("\n".join(expected) + "\n")
    params = from_mapping(Params, {
        "workers": workers, "paths": {"store": str(root / "store"), "cache": str(root / "cache")},
        "ingest": {"sources": [{"kind": "urls", "path": str(root / "urls.txt")}],
                   "scrape": {"timeout_s": TIMEOUT_S, "retries": RETRIES, "backoff_s": 0.02,
                              "max_redirects": 3, "allow_private_hosts": True,
                              "concurrency": 16, "per_host": 16}}}, "")
    started = time.monotonic()
    run_ingest(params, IngestOptions(out_dir=root / "out"))
    seconds = time.monotonic() - started
    manifest = read_table(root / "out" / "manifest.parquet")
    rejects = read_table(root / "out" / "rejects.parquet")
    stored = {uri for uris in manifest["source_uris"] for uri in uris}
    return FaultRun(expected, faults, stored, dict(zip(rejects.source_uri, rejects.reason)),
                    seconds)
