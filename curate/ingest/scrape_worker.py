"""URL fetching inside the worker processes of ingest.

Each worker process keeps one event loop and one HTTP client (its share of the concurrency
limits, with its connection pool kept alive between batches) and fetches, hashes, validates
and stores a batch of URLs in one go. Response bodies thus go from the socket to the store in
the process that validates them: they are never copied through the coordinator or pickled
down a pipe, and HTTP parsing is spread over every core instead of one. The coordinator only
hands out URL batches and records the small results, as it does for local files.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass

try:  # libuv's event loop: 5-13% less CPU per URL than asyncio's in bench/ingest.py
    from uvloop import new_event_loop
except ImportError:  # not built for this platform (Windows)
    from asyncio import new_event_loop

from curate.ingest.config import ScrapeConfig
from curate.ingest.scrape import Scraper
from curate.ingest.worker import Limits, Record, accept_bytes, reject


@dataclass(frozen=True)
class UrlOutcome:
    """One URL's record; `fetch_failed` when no body arrived (cached by URL, not by hash)."""

    record: Record
    fetch_failed: bool


def share_of_limits(scrape: ScrapeConfig, processes: int) -> ScrapeConfig:
    """Split the overall and per-host concurrency between `processes` (at least 1 each).

    The hosts see at most the configured number of connections in total (more only when a
    limit is smaller than the number of processes, since each process needs one).
    """
    return dataclasses.replace(scrape, concurrency=max(1, scrape.concurrency // processes),
                               per_host=max(1, scrape.per_host // processes))


_loop: asyncio.AbstractEventLoop | None = None
_scrapers: dict[tuple[ScrapeConfig, int], Scraper] = {}


def fetch_urls(urls: tuple[str, ...], scrape: ScrapeConfig, limits: Limits) -> list[UrlOutcome]:
    """Fetch and accept every URL of a batch (concurrently, within `scrape`: this process's
    share of the limits); one outcome per URL, in order."""
    global _loop
    if _loop is None:
        _loop = new_event_loop()
    key = (scrape, limits.max_bytes)
    if key not in _scrapers:
        _scrapers[key] = Scraper(scrape, limits.max_bytes)
    scraper = _scrapers[key]

    async def one(url: str) -> UrlOutcome:
        fetched = await scraper.fetch(url)
        if fetched.data is None:
            return UrlOutcome(reject("url", url, fetched.reason or "unreachable",
                                     fetched.message or ""), fetch_failed=True)
        return UrlOutcome(accept_bytes(fetched.data, "url", url, limits), False)

    async def all_of_them() -> list[UrlOutcome]:
        return list(await asyncio.gather(*(one(url) for url in urls)))

    return _loop.run_until_complete(all_of_them())


def close_clients() -> None:
    """Close this process's HTTP clients and event loop (for the inline, one-process mode)."""
    global _loop
    if _loop is None:
        return
    for scraper in _scrapers.values():
        _loop.run_until_complete(scraper.__aexit__(None, None, None))
    _scrapers.clear()
    _loop.close()
    _loop = None
