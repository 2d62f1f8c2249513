"""The scraper's SSRF guard: which URLs it may fetch, checked before every request.

A page asked for by a model, a user or a redirect must not reach what only the worker can
reach: its loopback, the private network, link-local addresses and the clouds' metadata
services. `SsrfGuard.check(url)` parses the URL, allows only `http` and `https`, resolves the
host (DNS) and refuses it if any address it resolves to is not a public one; the caller then
connects to the address that was checked (`Target.address`), so a DNS answer that changes
between the check and the connection (rebinding) cannot redirect it. The scraper checks again
at every redirect hop.

Refused: loopback (127.0.0.0/8, ::1), private (10/8, 172.16/12, 192.168/16, fc00::/7),
shared (100.64/10), link-local (169.254/16, fe80::/10), multicast, unspecified, reserved and
documentation ranges, and the metadata services (169.254.169.254, fd00:ec2::254,
100.100.100.200), including IPv4 addresses wrapped in IPv6 (::ffff:a.b.c.d, NAT64, 6to4,
Teredo). An allowlist (setting `travel_scraper_allow`, comma-separated `host[:port]` entries:
an address, a network such as `10.0.0.0/8`, or a host name) lets named targets through, like
a test's fixture server on 127.0.0.1.

Each refusal is a typed error (`UrlRefused` and its subclasses); none is worth retrying.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: A resolver: host name and port to the addresses it stands for (as text).
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

ALLOWED_SCHEMES = ("http", "https")
_DEFAULT_PORTS = {"http": 80, "https": 443}

#: The clouds' instance metadata services (AWS, GCP, Azure, OpenStack; AWS over IPv6; Alibaba).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NUMERIC_HOST = re.compile(r"[0-9a-fA-FxX.]+")


class UrlRefused(Exception):
    """The scraper will not fetch this URL (nothing was sent)."""


class InvalidUrl(UrlRefused):
    """Not a URL the scraper can fetch: no host, a bad port, credentials in it, too long."""


class SchemeNotAllowed(UrlRefused):
    """Only http and https URLs are fetched (not file:, ftp:, gopher:, data:, ...)."""


class HostNotFound(UrlRefused):
    """The host name does not resolve."""


class AddressBlocked(UrlRefused):
    """The host is, or resolves to, an address the scraper must not reach (`reason` says
    which kind: loopback, private, link-local, cloud metadata, ...)."""

    def __init__(self, message: str, *, reason: str = "", address: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.address = address


def blocked_reason(address: IPAddress) -> str | None:
    """Why the scraper must not reach `address`, or None for a public address."""
    if address in METADATA_ADDRESSES:
        return "cloud metadata"
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        inner = blocked_reason(embedded) if embedded is not None else None
        if inner is not None:
            return f"{inner} (IPv4 in IPv6)"
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    )
    for reason, hit in checks:
        if hit:
            return reason
    if not address.is_global:  # shared (100.64/10), documentation, benchmarking ranges
        return "not globally routable"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4, Teredo client), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


@dataclass(frozen=True)
class AllowEntry:
    """One allowlist entry: a host name, an address or a network, and maybe a port."""

    host: str | None = None
    network: IPNetwork | None = None
    port: int | None = None

    def matches(self, host: str, address: IPAddress, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            return address in self.network
        return self.host == host.lower()


@dataclass(frozen=True)
class Allowlist:
    """Targets let through although their addresses would be refused."""

    entries: tuple[AllowEntry, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> Allowlist:
        """From `host[:port],...`: `127.0.0.1:8080`, `[::1]:8080`, `10.0.0.0/8`,
        `fixtures.internal`. Raises ValueError on an entry it cannot read."""
        return cls(tuple(_entry(item.strip()) for item in (text or "").split(",") if item.strip()))

    def allows(self, host: str, address: IPAddress, port: int) -> bool:
        return any(entry.matches(host, address, port) for entry in self.entries)


def _entry(item: str) -> AllowEntry:
    host, port = item, None
    if item.startswith("["):  # [v6] or [v6]:port
        inside, _, rest = item[1:].partition("]")
        host = inside
        if rest:
            port = _port(rest.removeprefix(":"), item)
    elif item.count(":") == 1:  # host:port (a bare IPv6 address has several colons)
        host, _, text = item.partition(":")
        port = _port(text, item)
    try:
        return AllowEntry(network=ipaddress.ip_network(host, strict=False), port=port)
    except ValueError:
        pass
    if not host or "/" in host or " " in host:
        raise ValueError(f"allowlist entry {item!r}: expected host[:port], address or network")
    return AllowEntry(host=host.lower(), port=port)


def _port(text: str, item: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"allowlist entry {item!r}: bad port {text!r}")
    return int(text)


@dataclass(frozen=True)
class Target:
    """A URL that passed the guard, and the checked address to connect to."""

    url: str
    scheme: str
    host: str
    port: int
    address: str
    #: Every address the host resolved to (all checked).
    addresses: tuple[str, ...]

    @property
    def pinned_url(self) -> str:
        """The URL with its host replaced by the checked address (send `Host: host`)."""
        parts = urlsplit(self.url)
        host = f"[{self.address}]" if ":" in self.address else self.address
        rest = parts.path or "/"
        if parts.query:
            rest += f"?{parts.query}"
        return f"{self.scheme}://{host}:{self.port}{rest}"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = _DEFAULT_PORTS[self.scheme]
        return host if self.port == default else f"{host}:{self.port}"


async def system_resolver(host: str, port: int) -> Sequence[str]:
    """The addresses of `host` from the system's resolver (what a connection would use)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]


class SsrfGuard:
    """Checks URLs before the scraper fetches them (see the module docstring)."""

    max_url_chars = 2048

    def __init__(self, *, allow: Allowlist | None = None, resolve: Resolver | None = None):
        self._allow = allow or Allowlist()
        self._resolve = resolve or system_resolver

    async def check(self, url: str) -> Target:
        """The target of `url` if the scraper may fetch it; raises `UrlRefused` otherwise."""
        scheme, host, port = parse_url(url, max_chars=self.max_url_chars)
        addresses = await self._addresses(host, port)
        for address in addresses:
            reason = blocked_reason(address)
            if reason is not None and not self._allow.allows(host, address, port):
                shown = host if str(address) == host else f"{host} ({address})"
                raise AddressBlocked(
                    f"{shown} is a {reason} address: the scraper does not fetch it",
                    reason=reason,
                    address=str(address),
                )
        texts = tuple(str(a) for a in addresses)
        # IPv4 first where there is one: many containers have no IPv6 route.
        address = next((a for a in texts if ":" not in a), texts[0])
        return Target(url=url, scheme=scheme, host=host, port=port, address=address,
                      addresses=texts)  # fmt: skip

    async def _addresses(self, host: str, port: int) -> list[IPAddress]:
        literal = _literal(host)
        if literal is not None:
            return [literal]
        try:
            found = await self._resolve(host, port)
        except (OSError, UnicodeError) as err:
            raise HostNotFound(f"{host} does not resolve: {err}") from None
        addresses: list[IPAddress] = []
        for text in found:
            parsed = _literal(text.split("%", 1)[0])  # drop an IPv6 zone id
            if parsed is None:
                raise HostNotFound(f"{host} resolved to {text!r}, which is not an address")
            if parsed not in addresses:
                addresses.append(parsed)
        if not addresses:
            raise HostNotFound(f"{host} resolves to no address")
        return addresses


def parse_url(url: str, *, max_chars: int = 2048) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL the scraper may try, or `InvalidUrl` /
    `SchemeNotAllowed`. The host is lower-case, without IPv6 brackets."""
    if len(url) > max_chars:
        raise InvalidUrl(f"the URL is {len(url)} characters long (at most {max_chars})")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise InvalidUrl("the URL contains whitespace or control characters")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise SchemeNotAllowed(
            f"scheme {scheme or '(none)'!r} is not fetched: only http and https URLs are"
        )
    if parts.username is not None or parts.password is not None:
        raise InvalidUrl("URLs with credentials (user:password@) are not fetched")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise InvalidUrl(f"the URL {url!r} names no host")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise InvalidUrl("the URL's port is not a number from 1 to 65535") from None
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        raise InvalidUrl(f"the host {host!r} is not a valid name") from None
    return scheme, host.lower(), port


def _literal(host: str) -> IPAddress | None:
    """`host` as an address if it is one, in any form a resolver reads as an address: the
    usual ones, and IPv4 in short, octal, hex or integer form (`127.1`, `0x7f.1`,
    `2130706433`), which resolvers turn into addresses without DNS."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


__all__ = [
    "ALLOWED_SCHEMES",
    "AddressBlocked",
    "AllowEntry",
    "Allowlist",
    "HostNotFound",
    "InvalidUrl",
    "METADATA_ADDRESSES",
    "Resolver",
    "SchemeNotAllowed",
    "SsrfGuard",
    "Target",
    "UrlRefused",
    "blocked_reason",
    "parse_url",
    "system_resolver",
]
