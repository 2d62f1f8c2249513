"""The scraper's SSRF guard, alone: which addresses, names and URLs it refuses, and why.

Host names resolve through a resolver of the test's own (a table), so the guard's decisions
are tested without DNS; `localhost` also goes through the system's resolver once.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest

from examples.travel.ssrf import (
    AddressBlocked,
    Allowlist,
    HostNotFound,
    InvalidUrl,
    SchemeNotAllowed,
    SsrfGuard,
    blocked_reason,
)

REFUSED = {
    "127.0.0.1": "loopback",
    "127.255.255.254": "loopback",
    "10.0.0.1": "private",
    "172.16.5.4": "private",
    "172.31.255.255": "private",
    "192.168.1.1": "private",
    "169.254.10.10": "link-local",
    "169.254.169.254": "cloud metadata",
    "100.100.100.200": "cloud metadata",
    "0.0.0.0": "unspecified",
    "224.0.0.251": "multicast",
    "239.255.255.250": "multicast",
    "240.0.0.1": "private",
    "100.64.0.1": "not globally routable",
    "192.0.2.10": "private",
    "198.18.0.1": "private",
    "::1": "loopback",
    "::": "unspecified",
    "fe80::1": "link-local",
    "fc00::1": "private",
    "fd12:3456::1": "private",
    "fd00:ec2::254": "cloud metadata",
    "ff02::1": "multicast",
    "2001:db8::1": "private",
    "::ffff:127.0.0.1": "loopback (IPv4 in IPv6)",
    "::ffff:169.254.169.254": "cloud metadata (IPv4 in IPv6)",
    "64:ff9b::10.0.0.1": "private (IPv4 in IPv6)",
    "2002:c0a8:101::1": "private (IPv4 in IPv6)",
}
PUBLIC = ("93.184.215.14", "8.8.8.8", "151.101.1.69", "2606:4700:4700::1111", "2a00:1450:4001::200e",
          "2002:808:808::1")  # fmt: skip


@pytest.mark.parametrize(("address", "reason"), REFUSED.items(), ids=list(REFUSED))
def test_addresses_that_are_not_public_are_refused_with_a_reason(address: str, reason: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) is None


def _resolver(table: dict[str, Sequence[str]]):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> Sequence[str]:
        if host not in table:
            raise OSError(f"[Errno -2] Name or service not known: {host}")
        return table[host]

    return resolve


NAMES = {
    "example.org": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
    "intranet.example": ["10.1.2.3"],
    "metadata.google.internal": ["169.254.169.254"],
    "rebind.example": ["93.184.215.14", "127.0.0.1"],  # one public, one loopback answer
    "v6only.example": ["fd00::5"],
    "zoned.example": ["fe80::1%eth0"],
    "fixtures.test": ["127.0.0.1"],
}


async def test_names_are_resolved_and_every_address_is_checked() -> None:
    guard = SsrfGuard(resolve=_resolver(NAMES))
    target = await guard.check("https://Example.org/path?q=1")
    assert (target.scheme, target.host, target.port) == ("https", "example.org", 443)
    assert target.address == "93.184.215.14"  # the connection goes to the checked address
    assert target.pinned_url == "https://93.184.215.14:443/path?q=1"
    assert target.host_header == "example.org"
    for name, reason in [("intranet.example", "private"), ("metadata.google.internal", "cloud metadata"),
                         ("rebind.example", "loopback"), ("v6only.example", "private"),
                         ("zoned.example", "link-local")]:  # fmt: skip
        with pytest.raises(AddressBlocked) as refused:
            await guard.check(f"http://{name}/")
        assert refused.value.reason == reason, name
        assert name in str(refused.value)
    with pytest.raises(HostNotFound):
        await guard.check("http://nowhere.example/")


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1/", "http://127.1/", "http://0x7f.0.0.1/", "http://2130706433/", "http://0177.0.0.1/",
     "http://[::1]:8080/", "http://[::ffff:7f00:1]/", "http://169.254.169.254/latest/meta-data/",
     "http://[fd00:ec2::254]/", "http://0.0.0.0:22/", "http://10.0.0.1.nip.io.internal/"],
)  # fmt: skip
async def test_addresses_in_any_spelling_are_refused(url: str) -> None:
    guard = SsrfGuard(resolve=_resolver({"10.0.0.1.nip.io.internal": ["10.0.0.1"]}))
    with pytest.raises(AddressBlocked):
        await guard.check(url)


async def test_localhost_through_the_system_resolver_is_refused() -> None:
    with pytest.raises(AddressBlocked) as refused:
        await SsrfGuard().check("http://localhost:8000/admin")
    assert refused.value.reason == "loopback"


@pytest.mark.parametrize(
    ("url", "error"),
    [("ftp://example.org/file", SchemeNotAllowed), ("file:///etc/passwd", SchemeNotAllowed),
     ("gopher://example.org/", SchemeNotAllowed), ("javascript:alert(1)", SchemeNotAllowed),
     ("data:text/html,hi", SchemeNotAllowed), ("example.org/page", SchemeNotAllowed),
     ("http:///nohost", InvalidUrl), ("http://user:pw@example.org/", InvalidUrl),
     ("http://example.org:99999/", InvalidUrl), ("http://exa mple.org/", InvalidUrl),
     ("http://example.org/\r\nHost: evil", InvalidUrl), ("http://example.org/" + "a" * 3000, InvalidUrl)],
)  # fmt: skip
async def test_urls_that_are_not_http_or_malformed_are_refused(
    url: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await SsrfGuard(resolve=_resolver(NAMES)).check(url)


async def test_the_allowlist_lets_named_targets_through_and_only_them() -> None:
    allow = Allowlist.parse("127.0.0.1:8080, fixtures.test, [::1]:9000, 10.20.0.0/16")
    guard = SsrfGuard(allow=allow, resolve=_resolver(NAMES))
    assert (await guard.check("http://127.0.0.1:8080/page")).address == "127.0.0.1"
    assert (await guard.check("http://fixtures.test:1234/")).address == "127.0.0.1"  # any port
    assert (await guard.check("http://[::1]:9000/")).address == "::1"
    assert (await guard.check("http://10.20.3.4/")).address == "10.20.3.4"
    for url in ("http://127.0.0.1:8081/", "http://[::1]:9001/", "http://10.21.0.1/",
                "http://169.254.169.254/", "http://intranet.example/"):  # fmt: skip
        with pytest.raises(AddressBlocked):
            await guard.check(url)


@pytest.mark.parametrize("entry", ["127.0.0.1:http", "host:0", "[::1]:70000", "a b", "x/y"])
def test_an_allowlist_entry_it_cannot_read_is_an_error(entry: str) -> None:
    with pytest.raises(ValueError, match="allowlist entry"):
        Allowlist.parse(entry)
