"""Ingest of URL lists against a real HTTP server: every failure mode ends in a reason."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

TIMEOUT_S = 0.5
RETRIES = 1
MAX_REDIRECTS = 3
MAX_FILE_MB = 0.05  # 52,428 bytes


def scrape_settings(**overrides) -> dict:
    return {"timeout_s": TIMEOUT_S, "retries": RETRIES, "backoff_s": 0.01,
            "max_redirects": MAX_REDIRECTS, "allow_private_hosts": True, **overrides}


def build_site(server, images) -> dict[str, str | None]:
    """Set up the routes; return path -> expected reject reason (None: stored)."""
    respond = server.respond
    dup = images.jpeg(seed=3)
    server.serve_bytes("/good.jpg", images.jpeg(seed=1))
    server.serve_bytes("/good.png", images.png(seed=2), "image/png")
    server.serve_bytes("/dup-a.jpg", dup)
    server.serve_bytes("/dup-b.jpg", dup)
    server.serve_bytes("/image-as-html", images.png(seed=4), "text/html")
    server.serve_bytes("/html-as-jpeg.jpg", b"<!doctype html><html>Sorry</html>")
    server.serve_bytes("/empty.jpg", b"")
    server.serve_bytes("/target.png", images.png(seed=5), "image/png")
    flaky, limited = images.jpeg(seed=6), images.jpeg(seed=11)

    def slow_body(h, n):  # headers at once, then the body stalls past the deadline
        respond(h, flaky[:100], length=len(flaky))
        h.wfile.flush()
        server.sleep(4 * TIMEOUT_S)
        h.wfile.write(flaky[100:])

    big = images.random_bytes(100_000, seed=7)
    routes = {
        "/flaky.jpg": lambda h, n: respond(h, flaky) if n > 1 else respond(h, status=500),
        "/always-500.jpg": lambda h, n: respond(h, b"oops", status=500, content_type="text/plain"),
        "/forbidden.jpg": lambda h, n: respond(h, status=403),
        "/rate-limited.jpg": lambda h, n: respond(h, limited) if n > 1 else respond(
            h, status=429, headers={"Retry-After": "0"}),
        "/slow.jpg": lambda h, n: (server.sleep(4 * TIMEOUT_S), respond(h, flaky)),
        "/slow-body.jpg": slow_body,
        "/redirect-nowhere": lambda h, n: respond(h, status=302),
        "/truncated.jpg": lambda h, n: respond(h, dup[:1000], length=len(dup)),
        "/loop": lambda h, n: respond(h, status=302, headers={"Location": "/loop"}),
        "/go": lambda h, n: respond(h, status=301, headers={"Location": "target.png"}),
        "/big-declared.jpg": lambda h, n: respond(h, big),
        "/big-streamed.jpg": lambda h, n: respond(h, big, length=-1),
    }
    server.routes.update(routes)
    return {
        "/good.jpg": None, "/good.png": None, "/dup-a.jpg": None, "/dup-b.jpg": None,
        "/flaky.jpg": None, "/rate-limited.jpg": None, "/image-as-html": None, "/go": None,
        "/missing.jpg": "http_404", "/forbidden.jpg": "http_403", "/always-500.jpg": "http_500",
        "/slow.jpg": "timeout", "/slow-body.jpg": "timeout", "/truncated.jpg": "truncated_body",
        "/redirect-nowhere": "bad_redirect",
        "/loop": "too_many_redirects", "/big-declared.jpg": "too_large",
        "/big-streamed.jpg": "too_large", "/html-as-jpeg.jpg": "not_an_image",
        "/empty.jpg": "empty_file",
    }


def closed_port() -> int:
    """A local port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_url_list(path: Path, urls: list[str]) -> Path:
    lines = ["# scraped for the test", ""] + urls + [urls[0], "", "  "]  # comment, blanks, repeat
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(params=[1, 2], ids=["one-process", "worker-processes"])
def site(request, tmp_path, http_server, images, make_params):
    """(server, expected outcomes by URL, params) for a URL list covering every case.

    With 2 workers the URLs are fetched in 4 worker processes (see scrape_worker), with 1 in
    the test's own process: both must account for every URL the same way.
    """
    expected = {http_server.url(p): r for p, r in build_site(http_server, images).items()}
    expected["ftp://127.0.0.1/file.jpg"] = "unsupported_scheme"
    expected[f"http://127.0.0.1:{closed_port()}/gone.jpg"] = "unreachable"
    url_list = write_url_list(tmp_path / "urls.txt", list(expected))
    params = make_params(tmp_path, [{"kind": "urls", "path": str(url_list)}],
                         workers=request.param, max_file_mb=MAX_FILE_MB,
                         scrape=scrape_settings())
    return http_server, expected, params


def test_every_url_is_stored_or_rejected_with_its_reason(site, tmp_path, images, ingest):
    server, expected, params = site
    result = ingest(params, tmp_path / "out")

    assert result.reasons() == {url: r for url, r in expected.items() if r is not None}
    assert all(result.rejects["message"].str.len() > 10)
    stored = [u for uris in result.stored_uris().values() for u in uris]
    assert sorted(stored) == sorted(url for url, r in expected.items() if r is None)

    # same bytes at two URLs: one row listing both
    dup_row = result.manifest[result.manifest["n_sources"] == 2]
    assert len(result.manifest) == 7 and len(dup_row) == 1
    assert list(dup_row.iloc[0]["source_uris"]) == [server.url("/dup-a.jpg"),
                                                    server.url("/dup-b.jpg")]
    assert (result.manifest["n_sources"] == 1).sum() == 6

    # the stored bytes are exactly what was served (after retries, whatever the
    # Content-Type, at the end of the redirect), under their content id
    by_uri = {uris[0]: image_id for image_id, uris in result.stored_uris().items()}
    rows = result.manifest.set_index("image_id")
    for path, served, fmt in [("/flaky.jpg", images.jpeg(seed=6), "JPEG"),
                              ("/rate-limited.jpg", images.jpeg(seed=11), "JPEG"),
                              ("/image-as-html", images.png(seed=4), "PNG"),
                              ("/go", images.png(seed=5), "PNG")]:
        image_id = by_uri[server.url(path)]
        assert image_id == hashlib.sha256(served).hexdigest()
        row = rows.loc[image_id]
        assert row["format"] == fmt and (row["width"], row["height"]) == (64, 48)
        assert (tmp_path / "store" / row["store_path"]).read_bytes() == served

    # retries only where they can help, and no more than configured
    hits = server.hits
    assert hits["/flaky.jpg"] == hits["/rate-limited.jpg"] == 2
    for retried in ("/always-500.jpg", "/truncated.jpg", "/slow.jpg", "/slow-body.jpg"):
        assert hits[retried] == RETRIES + 1, retried
    for permanent in ("/missing.jpg", "/forbidden.jpg", "/html-as-jpeg.jpg", "/redirect-nowhere",
                      "/big-declared.jpg", "/big-streamed.jpg"):
        assert hits[permanent] == 1, permanent
    assert hits["/good.jpg"] == 1  # listed twice in the file, fetched once
    assert hits["/loop"] == MAX_REDIRECTS + 1 and hits["/target.png"] == 1

    assert result.summary.counts["stored"] == 7 and result.summary.counts["exact_duplicate"] == 1
    assert result.summary.reasons["too_large"] == 2
    messages = dict(zip(result.rejects["source_uri"], result.rejects["message"], strict=True))
    assert "Content-Length 100,000" in messages[server.url("/big-declared.jpg")]  # not read
    assert "body exceeds 52,428 bytes" in messages[server.url("/big-streamed.jpg")]


def test_private_hosts_are_refused_by_default(tmp_path, http_server, images, make_params, ingest):
    http_server.serve_bytes("/good.jpg", images.jpeg())
    port = http_server.server_address[1]
    urls = [http_server.url("/good.jpg"), f"http://localhost:{port}/good.jpg"]
    url_list = write_url_list(tmp_path / "urls.txt", urls)
    params = make_params(tmp_path, [{"kind": "urls", "path": str(url_list)}],
                         scrape=scrape_settings(allow_private_hosts=False))
    result = ingest(params, tmp_path / "out")
    assert result.reasons() == {url: "private_host" for url in urls}
    assert result.rejects["message"].str.contains("allow_private_hosts").all()
    assert len(result.manifest) == 0
    assert sum(http_server.hits.values()) == 0  # nothing was even requested


def test_rerun_fetches_nothing_and_retry_failed_fetches_only_failures(site, tmp_path, ingest):
    server, expected, params = site
    first = ingest(params, tmp_path / "out")
    hits_after_first = dict(server.hits)

    second = ingest(params, tmp_path / "out")
    assert dict(server.hits) == hits_after_first  # nothing fetched again
    assert second.table_bytes() == first.table_bytes()
    assert second.summary.cached == len(expected)

    server.hits.clear()
    third = ingest(params, tmp_path / "out", retry_failed=True)
    failed_paths = {url.removeprefix(server.url("")) for url, r in expected.items()
                    if r is not None and url.startswith(server.url("/"))}
    assert set(server.hits) == failed_paths  # every failure again, no success
    assert third.reasons() == first.reasons()
    assert third.table_bytes()[0] == first.table_bytes()[0]  # manifest unchanged
    assert third.summary.cached == sum(r is None for r in expected.values())
