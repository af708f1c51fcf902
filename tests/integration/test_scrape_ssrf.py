"""SSRF: the scraper connects only to addresses it has just judged public.

A rebinding DNS server answers a public address to the first lookup and 127.0.0.1 to the
next. The scraper must never reach the loopback server. Tests never connect to a public
address: the network under the pinning backend records where a connection would go and
fails it, the way an unreachable host would.
"""

from __future__ import annotations

import asyncio

import httpcore
import pytest

from curate.ingest.config import ScrapeConfig
from curate.ingest.pinned import PinnedBackend, is_public
from curate.ingest.scrape import Scraper

pytestmark = pytest.mark.integration
PUBLIC = "93.184.216.34"  # judged public; never actually connected to here


@pytest.mark.parametrize("address,public", [
    ("8.8.8.8", True), ("2606:4700:4700::1111", True),
    ("127.0.0.1", False), ("10.1.2.3", False), ("169.254.169.254", False), ("::1", False),
    ("::ffff:127.0.0.1", False), ("::ffff:8.8.8.8", True),  # IPv4-mapped
    ("64:ff9b::7f00:1", False), ("64:ff9b::a9fe:a9fe", False),  # NAT64 of loopback, metadata
    ("2002:7f00:1::", False), ("2002:a00:1::", False),  # 6to4 of 127.0.0.1, 10.0.0.1
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),  # Teredo whose client is 127.0.0.1
    ("fe80::1%eth0", False), ("224.0.0.1", False),
])
def test_embedded_ipv4_addresses_are_judged_too(address: str, public: bool) -> None:
    assert is_public(address) is public


class RecordingNetwork(httpcore.AsyncNetworkBackend):
    """Stands where the internet would be: records each connection and fails it."""

    def __init__(self, local: httpcore.AsyncNetworkBackend) -> None:
        self.connected: list[str] = []
        self.local = local

    async def connect_tcp(self, host, port, timeout=None, local_address=None,
                          socket_options=None):
        self.connected.append(host)
        if host == "127.0.0.1":  # the loopback test server is reachable: a bypass would hit it
            return await self.local.connect_tcp(host, port, timeout, local_address,
                                                socket_options)
        raise httpcore.ConnectError(f"{host} is unreachable from the test machine")

    async def sleep(self, seconds):
        await asyncio.sleep(seconds)


def _scraper(resolve, allow_private: bool = False, **cfg) -> tuple[Scraper, RecordingNetwork]:
    network = RecordingNetwork(httpcore.AnyIOBackend())
    settings = ScrapeConfig(**{"timeout_s": 2.0, "retries": 2, "backoff_s": 0.01, **cfg},
                            allow_private_hosts=allow_private)
    return Scraper(settings, 10**6, PinnedBackend(allow_private, resolve, network)), network


def test_a_rebinding_dns_answer_never_reaches_the_loopback_server(http_server, images) -> None:
    http_server.serve_bytes("/secret.jpg", images.jpeg())
    port = http_server.server_address[1]
    lookups: list[str] = []

    async def rebinding(host: str, _port: int) -> list[str]:
        lookups.append(host)
        return [PUBLIC] if len(lookups) == 1 else ["127.0.0.1"]

    async def run():
        scraper, network = _scraper(rebinding)
        async with scraper:
            return await scraper.fetch(f"http://images.example:{port}/secret.jpg"), network

    fetched, network = asyncio.run(run())
    assert fetched.data is None and fetched.reason == "private_host", fetched
    assert "127.0.0.1" in fetched.message
    assert network.connected == [PUBLIC]  # only ever the address that was judged
    assert sum(http_server.hits.values()) == 0
    assert len(lookups) == 2  # a verdict is never reused: each connection looks up again


def test_every_redirect_hop_is_judged_at_connection_time(http_server, images) -> None:
    port = http_server.server_address[1]
    http_server.routes["/jump"] = lambda h, n: http_server.respond(
        h, status=302, headers={"Location": f"http://internal.example:{port}/secret.jpg"})
    http_server.serve_bytes("/secret.jpg", images.jpeg())

    async def resolve(host: str, _port: int) -> list[str]:
        return ["127.0.0.1"] if host in ("cdn.example", "internal.example") else [PUBLIC]

    async def run(allow: bool):
        scraper, network = _scraper(resolve, allow_private=allow)
        async with scraper:
            return await scraper.fetch(f"http://cdn.example:{port}/jump"), network

    refused, network = asyncio.run(run(False))
    assert refused.reason == "private_host" and network.connected == []
    allowed, network = asyncio.run(run(True))  # allowed: both hops connect to the pinned address
    assert allowed.data == images.jpeg() and network.connected == ["127.0.0.1", "127.0.0.1"]
    assert http_server.hits["/jump"] == 1 and http_server.hits["/secret.jpg"] == 1


def test_a_urls_whole_time_is_bounded_across_retries(http_server) -> None:
    http_server.routes["/stall"] = lambda h, n: (http_server.sleep(5), http_server.respond(h))

    async def loopback(host: str, _port: int) -> list[str]:
        return ["127.0.0.1"]

    async def run():
        scraper, _ = _scraper(loopback, allow_private=True, timeout_s=1.0, retries=10,
                              total_timeout_s=1.5)
        async with scraper:
            start = asyncio.get_running_loop().time()
            fetched = await scraper.fetch(f"http://127.0.0.1:{http_server.server_address[1]}"
                                          "/stall")
            return fetched, asyncio.get_running_loop().time() - start

    fetched, took = asyncio.run(run())
    assert fetched.reason == "timeout" and "total_timeout_s" in fetched.message
    assert 1.4 < took < 3.0 and fetched.attempts >= 2
