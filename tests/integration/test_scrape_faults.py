"""Scraping against a server that misbehaves on a seeded 30% of its URLs.

Each faulty URL fails in one way (connection reset, 500, 503 or 429 with Retry-After, a
stall, a truncated body, a Content-Length that lies, a slow drip) a seeded number of times
and then answers, or keeps failing for good (a redirect loop, a permanent 500, a 404). Every
recoverable URL must be fetched within the retry budget, every other one rejected with its
reason, none unaccounted for, and the run's time bounded.
"""

from __future__ import annotations

import socket
import struct
import time

import numpy as np
import pytest

pytestmark = pytest.mark.integration

N_URLS = 120
TIMEOUT_S = 0.6
RETRIES = 3
#: fault -> (attempts it fails before answering; None = never answers, and the reason then)
FAULTS = {
    "reset": (2, None), "http_500": (1, None), "http_503": (2, None), "http_429": (1, None),
    "stall": (1, None), "truncated": (1, None), "lying_length": (1, None), "drip": (1, None),
    "redirect_loop": (None, "too_many_redirects"), "always_500": (None, "http_500"),
    "gone": (None, "http_404"),
}


def _reset(h) -> None:
    """Close the connection with a TCP RST and no response."""
    h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    h.close_connection = True
    h.connection.close()


def _route(server, fault: str, body: bytes):
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


def test_a_misbehaving_server_loses_no_url(tmp_path, http_server, images, make_params,
                                           ingest) -> None:
    rng = np.random.default_rng(30)
    faulty = set(rng.choice(N_URLS, size=int(0.3 * N_URLS), replace=False).tolist())
    kinds = iter(list(rng.permutation(list(FAULTS))) * N_URLS)  # every kind, then round robin
    expected: dict[str, str | None] = {}
    faults: dict[str, int] = {}
    for i in range(N_URLS):
        path = f"/img/{i:03d}.jpg"
        body = images.jpeg(96, 72, seed=1000 + i)
        if i in faulty:
            fault = str(next(kinds))
            faults[fault] = faults.get(fault, 0) + 1
            http_server.routes[path] = _route(http_server, fault, body)
            expected[http_server.url(path)] = FAULTS[fault][1]
        else:
            http_server.serve_bytes(path, body)
            expected[http_server.url(path)] = None
    url_list = tmp_path / "urls.txt"
    url_list.write_text("\n".join(expected) + "\n")
    params = make_params(tmp_path, [{"kind": "urls", "path": str(url_list)}], workers=1,
                         scrape={"timeout_s": TIMEOUT_S, "retries": RETRIES, "backoff_s": 0.02,
                                 "max_redirects": 3, "allow_private_hosts": True,
                                 "concurrency": 16, "per_host": 16})
    started = time.monotonic()
    result = ingest(params, tmp_path / "out")
    took = time.monotonic() - started

    stored = {uri for uris in result.stored_uris().values() for uri in uris}
    rejected = result.reasons()
    recoverable = [u for u, r in expected.items() if r is None]
    assert stored | set(rejected) == set(expected) and not stored & set(rejected)  # 0 lost
    assert sorted(stored) == sorted(recoverable)  # 100% of recoverable URLs fetched
    assert rejected == {u: r for u, r in expected.items() if r is not None}
    # Bounded: the slowest URL waits out a few attempt deadlines, and URLs run concurrently.
    assert took < 60, took
    assert set(faults) == set(FAULTS)
