"""Polite, bounded, retrying HTTP fetching of image URLs.

Failure handling follows what large scrapers learned the hard way: bounded
concurrency overall and per host, a deadline per attempt, retries with
exponential backoff and jitter only for failures that can heal (timeouts,
connection errors, 5xx, 429), none for 4xx; a cap on body size checked both
on Content-Length and while streaming; redirects followed by hand so every hop
is checked (scheme); every connection made only to an address that was just judged public
(`curate.ingest.pinned`); a deadline on each URL's whole time, retries included; and every
URL ends with either bytes or a reason code plus a message.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Self
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

from curate.ingest.config import ScrapeConfig
from curate.ingest.pinned import PinnedBackend, PrivateAddress

REDIRECT_CODES = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class Fetched:
    """Outcome of one URL: `data` on success, else `reason` and `message`."""

    url: str
    data: bytes | None = None
    reason: str | None = None
    message: str | None = None
    attempts: int = 1


class _Retryable(Exception):
    def __init__(self, reason: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason, self.message, self.retry_after = reason, message, retry_after


class _Permanent(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def _retry_after(value: str | None) -> float | None:
    try:
        return min(float(value), 60.0) if value else None
    except ValueError:
        return None


class Scraper:
    """Fetch URLs with one shared connection pool; use as an async context manager."""

    def __init__(self, cfg: ScrapeConfig, max_bytes: int,
                 network: PinnedBackend | None = None) -> None:
        self.cfg = cfg
        self.max_bytes = max_bytes
        self._slots = asyncio.Semaphore(cfg.concurrency)
        self._hosts: dict[str, asyncio.Semaphore] = {}
        transport = httpx.AsyncHTTPTransport(trust_env=False)
        # httpx has no option for httpcore's network backend: the pool is made again with it.
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=transport._pool._ssl_context,
            max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency,
            network_backend=network or PinnedBackend(cfg.allow_private_hosts))
        self._client = httpx.AsyncClient(
            transport=transport, trust_env=False,  # direct connections only: see pinned.py
            follow_redirects=False,
            timeout=httpx.Timeout(cfg.timeout_s),
            limits=httpx.Limits(
                max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency
            ),
            headers={"User-Agent": cfg.user_agent, "Accept": "image/*,*/*;q=0.5"},
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    async def fetch(self, url: str) -> Fetched:
        """Fetch one URL with retries within `total_timeout_s`; never raises for network or
        HTTP trouble."""
        attempts = [0]
        try:
            async with asyncio.timeout(self.cfg.total_timeout_s):
                return await self._fetch_with_retries(url, attempts)
        except TimeoutError:
            return Fetched(url, reason="timeout", attempts=attempts[0],
                           message=f"no result within ingest.scrape.total_timeout_s "
                                   f"({self.cfg.total_timeout_s:g} s, every attempt and wait)")

    async def _fetch_with_retries(self, url: str, attempts: list[int]) -> Fetched:
        attempt = 0
        while True:
            attempt += 1
            attempts[0] = attempt
            try:
                async with self._slots:
                    data = await self._fetch_once(url)
                return Fetched(url, data=data, attempts=attempt)
            except _Permanent as exc:
                return Fetched(url, reason=exc.reason, message=exc.message, attempts=attempt)
            except _Retryable as exc:
                if attempt > self.cfg.retries:
                    return Fetched(
                        url, reason=exc.reason,
                        message=f"{exc.message} (gave up after {attempt} attempts)",
                        attempts=attempt,
                    )
                delay = self.cfg.backoff_s * 2 ** (attempt - 1) * (1 + random.random() / 2)
                await asyncio.sleep(max(delay, exc.retry_after or 0.0))

    def _host_slot(self, host: str) -> asyncio.Semaphore:
        if host not in self._hosts:
            self._hosts[host] = asyncio.Semaphore(self.cfg.per_host)
        return self._hosts[host]

    async def _fetch_once(self, url: str) -> bytes:
        current = url
        for _hop in range(self.cfg.max_redirects + 1):
            parts = urlsplit(current)
            if parts.scheme not in ("http", "https"):
                raise _Permanent("unsupported_scheme", f"only http(s) URLs are fetched: {current}")
            if not parts.hostname:
                raise _Permanent("bad_url", f"URL has no host: {current}")
            async with self._host_slot(parts.hostname):
                location, body = await self._get(current)
            if body is not None:
                return body
            current = urljoin(current, location or "")
        raise _Permanent("too_many_redirects", f"more than {self.cfg.max_redirects} redirects")

    async def _get(self, url: str) -> tuple[str | None, bytes | None]:
        """One GET with a whole-attempt deadline: `(redirect target, None)` or `(None, body)`."""
        try:
            async with asyncio.timeout(self.cfg.timeout_s):
                async with self._client.stream("GET", url) as resp:
                    if resp.status_code in REDIRECT_CODES and "location" in resp.headers:
                        return resp.headers["location"], None
                    self._raise_for_status(resp)
                    return None, await self._read_limited(resp)
        except TimeoutError as exc:
            raise _Retryable("timeout",
                             f"no complete response within {self.cfg.timeout_s} s") from exc
        except httpx.TimeoutException as exc:
            raise _Retryable("timeout", f"timed out ({type(exc).__name__})") from exc
        except httpx.ConnectError as exc:
            raise _Retryable("unreachable", f"cannot connect: {exc}") from exc
        except httpx.RemoteProtocolError as exc:
            raise _Retryable("truncated_body", f"connection broke mid-response: {exc}") from exc
        except (httpx.ReadError, httpx.WriteError) as exc:
            raise _Retryable("connection_error", f"connection error: {exc}") from exc
        except httpx.InvalidURL as exc:
            raise _Permanent("bad_url", f"invalid URL: {exc}") from exc
        except PrivateAddress as exc:
            raise _Permanent("private_host", str(exc)) from exc

    def _raise_for_status(self, resp: httpx.Response) -> None:
        status = resp.status_code
        if status >= 500 or status == 429:
            raise _Retryable(
                f"http_{status}", f"server answered {status} {resp.reason_phrase}",
                _retry_after(resp.headers.get("retry-after")),
            )
        if status >= 400:
            raise _Permanent(f"http_{status}", f"server answered {status} {resp.reason_phrase}")
        if status in REDIRECT_CODES:
            raise _Permanent("bad_redirect", f"redirect {status} without a Location header")

    async def _read_limited(self, resp: httpx.Response) -> bytes:
        declared = resp.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise _Permanent("too_large", f"Content-Length {int(declared):,} exceeds the limit")
        chunks, size = [], 0
        async for chunk in resp.aiter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                raise _Permanent("too_large", f"body exceeds {self.max_bytes:,} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
