"""Connect only to the address that was checked (SSRF guard against DNS rebinding).

Checking a host name's address and then letting the HTTP client resolve the name again is a
race an attacker wins: their DNS server answers a public address to the check and 127.0.0.1
(or the cloud metadata address) to the connection. So the scraper's connections go through
this network backend: every TCP connection, on every attempt and every redirect hop, resolves
the name itself, judges the addresses, and connects to the one it judged. The TLS handshake
still uses the host name (SNI and certificate checks are made by httpcore from the URL's
host, not from the address), and the Host header is the URL's.

Addresses that embed an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::/96`,
6to4 `2002::/16`, Teredo `2001::/32`) are judged by the IPv4 address they lead to.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import typing
from collections.abc import Awaitable, Callable, Iterable

import httpcore

#: `resolve(host, port) -> addresses`; injectable so tests can play a rebinding DNS server.
Resolver = Callable[[str, int], Awaitable[list[str]]]
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class PrivateAddress(Exception):
    """The host resolves to an address the scraper must not connect to."""


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def embedded_addresses(address: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The address and every IPv4 address it carries inside it (all must be public)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            found.append(ip.ipv4_mapped)
        if ip in NAT64:
            found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None:
            found.append(ip.sixtofour)
        if ip.teredo is not None:
            found.extend(ip.teredo)
    return found


def is_public(address: str) -> bool:
    """Globally routable unicast, and so is every IPv4 address it embeds."""
    return all(ip.is_global and not ip.is_multicast for ip in embedded_addresses(address))


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, resolving and judging each host at connection time."""

    def __init__(self, allow_private: bool, resolve: Resolver = system_resolve,
                 inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.allow_private = allow_private
        self.resolve = resolve
        self._inner = inner or httpcore.AnyIOBackend()

    async def pick(self, host: str, port: int) -> str:
        """The address to connect to: the first one the lookup gave, when all are allowed."""
        try:
            addresses = await self.resolve(host, port)
        except (socket.gaierror, OSError) as exc:
            raise httpcore.ConnectError(f"cannot resolve host {host!r}: {exc}") from exc
        if not addresses:
            raise httpcore.ConnectError(f"host {host!r} has no address")
        if not self.allow_private:
            refused = [a for a in addresses if not is_public(a)]
            if refused:
                raise PrivateAddress(
                    f"host {host!r} resolves to {refused[0]}, a private, loopback or otherwise "
                    "non-public address; set ingest.scrape.allow_private_hosts: true to allow it")
        return addresses[0]

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[typing.Any] | None = None
                          ) -> httpcore.AsyncNetworkStream:
        address = await self.pick(host, port)
        return await self._inner.connect_tcp(address, port, timeout=timeout,
                                             local_address=local_address,
                                             socket_options=socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[typing.Any] | None = None
                                  ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are never scraped")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
