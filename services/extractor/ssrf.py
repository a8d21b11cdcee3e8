"""Where the extractor may download from: public addresses on allowed ports, and only the
address that was checked.

The filter follows the IANA special-purpose address registries (IPv4 and IPv6) and refuses
every range in them, plus multicast and, for IPv6, anything outside global unicast (2000::/3).
Addresses that wrap an IPv4 address (IPv4-mapped, 6to4, NAT64) are judged by the address they
wrap, so `2002:7f00:1::1` is loopback.

The check and the connection cannot drift apart (DNS rebinding): the HTTP client's network
backend resolves the host itself, filters every answer, and connects to the first address
that passed. TLS still verifies the certificate and sends SNI for the host name, because only
the TCP connect target changes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import typing

import httpcore
import httpx

from shared.errors import PermanentError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# https://www.iana.org/assignments/iana-ipv4-special-registry
REFUSED_IPV4 = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # carrier-grade NAT (shared address space)
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local (cloud metadata)
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation (TEST-NET-1)
        "192.31.196.0/24",  # AS112-v4
        "192.52.193.0/24",  # AMT
        "192.88.99.0/24",  # deprecated 6to4 relay anycast
        "192.168.0.0/16",  # private
        "192.175.48.0/24",  # direct delegation AS112
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation (TEST-NET-2)
        "203.0.113.0/24",  # documentation (TEST-NET-3)
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and 255.255.255.255 (limited broadcast)
    )
)

# https://www.iana.org/assignments/iana-ipv6-special-registry; the wrapping ranges
# (::ffff:0:0/96, 2002::/16, 64:ff9b::/96) are unwrapped before this list is consulted.
REFUSED_IPV6 = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "::/96",  # unspecified, loopback, deprecated IPv4-compatible addresses
        "64:ff9b:1::/48",  # local-use IPv4/IPv6 translation
        "100::/64",  # discard-only
        "100:0:0:1::/64",  # dummy prefix
        "2001::/23",  # IETF protocol assignments: Teredo, benchmarking, ORCHID, AMT, AS112
        "2001:db8::/32",  # documentation
        "2620:4f:8000::/48",  # direct delegation AS112
        "3fff::/20",  # documentation
        "5f00::/16",  # segment routing SIDs
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # deprecated site-local
        "ff00::/8",  # multicast
    )
)
GLOBAL_UNICAST_IPV6 = ipaddress.IPv6Network("2000::/3")
NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")


def wrapped_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, 6to4 or NAT64 address stands for, else None."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public_address(address: str) -> bool:
    """True when an address may be downloaded from: in no special-purpose range."""
    ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        inner = wrapped_ipv4(ip)
        if inner is None:
            return ip in GLOBAL_UNICAST_IPV6 and not any(ip in net for net in REFUSED_IPV6)
        ip = inner
    return not any(ip in net for net in REFUSED_IPV4)


def refused_address_reason(host: str) -> str:
    return (
        f"The address {host} points to a private or local network; downloading from it is "
        "not allowed."
    )


def check_port(host: str, port: int, allowed_ports: list[int]) -> None:
    if port not in allowed_ports:
        allowed = ", ".join(str(p) for p in allowed_ports) or "none"
        raise PermanentError(
            f"The address {host}:{port} uses a port documents may not be downloaded from "
            f"(allowed: {allowed})."
        )


async def resolve(host: str, port: int) -> list[str]:
    """Every address the host name resolves to, in the resolver's order."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        # DNS can hiccup; a name that truly does not exist fails again after the retries.
        raise ConnectionError(f"could not resolve {host}: {exc}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def checked_addresses(host: str, port: int, *, allow_private: bool) -> list[str]:
    """The addresses to connect to, in order: resolved once, and refused unless every answer
    is public (a name with one private answer is refused whichever answer would be used)."""
    addresses = await resolve(host, port)
    if not addresses:
        raise ConnectionError(f"could not resolve {host}: no addresses")
    if not allow_private and not all(is_public_address(a) for a in addresses):
        raise PermanentError(refused_address_reason(host))
    return addresses


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Resolves and checks the host and port at connect time, then connects to that very
    address. `allow_private`: a trusted network (tests, an intranet), any address and port."""

    def __init__(self, *, allow_private: bool, allowed_ports: list[int]) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._allow_private = allow_private
        self._allowed_ports = allowed_ports
        self.connected: list[tuple[str, str, int]] = []  # (host, address, port), for tests

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await checked_addresses(host, port, allow_private=self._allow_private)
        if not self._allow_private:
            check_port(host, port, self._allowed_ports)
        # Only checked addresses, each in turn: a name with an unreachable IPv6 answer still
        # connects over IPv4, as an unpinned client would.
        for address in addresses[:-1]:
            try:
                return await self._connect(
                    host, address, port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError:
                continue
        return await self._connect(
            host, addresses[-1], port, timeout, local_address, socket_options
        )

    async def _connect(
        self,
        host: str,
        address: str,
        port: int,
        timeout: float | None,
        local_address: str | None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None,
    ) -> httpcore.AsyncNetworkStream:
        self.connected.append((host, address, port))
        return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise PermanentError("Documents are not downloaded over local sockets.")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool whose every connection is made by
    PinnedBackend (httpx has no parameter for the network backend, so the pool is rebuilt)."""

    def __init__(self, backend: PinnedBackend, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(retries=0)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(),
            network_backend=backend,
            http1=True,
            http2=False,
        )
