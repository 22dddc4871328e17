"""AddressGuard: where a hub-mode upstream request may connect (the SSRF rule).

In hub mode one JupyterHub service holds a team's provider keys and makes requests on behalf
of its users, so a user-chosen base_url must not reach the hub's own network: loopback,
link-local, private ranges or a cloud metadata service. The rule judges EVERY address a name
resolves to (one private answer among public ones is enough to refuse), and GuardedTransport
connects to the address that was judged, with no second lookup, so DNS rebinding cannot swap
it. An admin allow-list (`allowed_addresses`) and the gateway's own engine (`trusted`) are the
only ways past it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from ..objs.errors import InvalidRequestError

__all__ = ["AddressGuard", "GuardedTransport", "Resolver", "refused_reason", "system_resolver"]

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""(host, port) -> the IP addresses the host resolves to."""

_IP = ipaddress.IPv4Address | ipaddress.IPv6Address
_Net = ipaddress.IPv4Network | ipaddress.IPv6Network

# Metadata services answer with instance credentials, so they get their own reason. Some sit in
# link-local space (checked after this), 168.63.129.16 (Azure wireserver) in public space.
_METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "169.254.170.23", "fd00:ec2::254", "fd00:ec2::23",
    "100.100.100.200", "168.63.129.16"))
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$")


def _mapped(ip: _IP) -> ipaddress.IPv4Address | None:
    return ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None


def _embedded_v4(ip: _IP) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (::ffff:a.b.c.d, 6to4, NAT64): the packet ends
    up there, so that is the address to judge."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.ipv4_mapped or ip.sixtofour


def refused_reason(ip: str) -> str | None:
    """None for a public unicast address, else why hub mode refuses it ("loopback", ...)."""
    addr = ipaddress.ip_address(ip)
    v4 = _embedded_v4(addr)
    if v4 is not None:
        return refused_reason(str(v4))
    if addr in _METADATA:
        return "cloud metadata"
    checks: list[tuple[bool, str]] = [
        (addr.is_unspecified, "unspecified"),
        (addr.is_loopback, "loopback"),
        (addr.is_link_local, "link-local"),
        (addr.is_multicast, "multicast"),
        (addr in _SHARED, "shared address space (100.64.0.0/10)"),
        (isinstance(addr, ipaddress.IPv6Address) and addr.is_site_local, "site-local"),
        (addr.is_reserved, "reserved"),
        (addr.is_private, "private"),
        (not addr.is_global, "not globally routable"),
    ]
    return next((reason for hit, reason in checks if hit), None)


def _literal(host: str) -> _IP | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _norm_host(host: str) -> str:
    """Host names compare case-insensitively, without brackets or the root's trailing dot."""
    return host.strip().removeprefix("[").removesuffix("]").rstrip(".").lower()


async def system_resolver(host: str, port: int) -> list[str]:
    """The OS resolver through the loop's getaddrinfo (a thread, so the loop never blocks)."""
    if _literal(_norm_host(host)) is not None:
        return [_norm_host(host)]
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class _Rule:
    """One allow-list entry: a network or a host name, optionally one port only."""

    network: _Net | None
    name: str | None
    port: int | None


def _parse_rule(entry: str) -> _Rule:
    def bad(why: str) -> ValueError:
        return ValueError(f"invalid allowed_addresses entry {entry!r}: {why}")

    text, port = entry.strip(), None
    if text.startswith("["):  # [v6]:port or [v6/len]:port
        inside, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise bad("expected [address]:port")
        text, port_text = inside, rest[1:] if rest else None
    elif text.count(":") == 1:  # v4, v4/len or name with a port
        text, port_text = text.split(":")
    else:
        port_text = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise bad(f"port {port_text!r} is not a number from 1 to 65535")
        port = int(port_text)
    if not text:
        raise bad("empty address")
    try:
        return _Rule(ipaddress.ip_network(text, strict=True), None, port)
    except ValueError as exc:
        if "/" in text or ":" in text or text.replace(".", "").isdigit():
            raise bad(str(exc)) from None
    name = _norm_host(text)
    if not _NAME.match(name):
        raise bad("not an IP address, a CIDR network or an ASCII host name (use the xn-- form)")
    return _Rule(None, name, port)


class AddressGuard:
    """Decides whether a (host, port) may be reached, and which address to connect to."""

    refused_reason = staticmethod(refused_reason)

    def __init__(self, allow: Iterable[str] = (), resolver: Resolver | None = None,
                 trusted: Callable[[], Iterable[tuple[str, int]]] | None = None) -> None:
        """`allow`: admin entries (CIDR, IP, either with a port, or a host name); a bad one raises
        ValueError now, not at the first request. `trusted()` is asked at every check, since the
        local engine's port changes whenever it restarts."""
        self._rules = [_parse_rule(e) for e in allow]
        self._resolver: Resolver = resolver or system_resolver
        self._trusted = trusted

    def _allowed(self, name: str, addr: _IP, port: int) -> bool:
        forms = [addr] + [v4 for v4 in (_embedded_v4(addr),) if v4 is not None]
        if self._trusted is not None and any(
                ipaddress.ip_address(ip) in forms and p == port for ip, p in self._trusted()):
            return True
        for rule in self._rules:
            if rule.port is not None and rule.port != port:
                continue
            if rule.name == name or (rule.network is not None and any(f in rule.network for f in forms)):
                return True
        return False

    async def check(self, host: str, port: int) -> str:
        """The address to connect to for host:port (the first one; an IPv4-mapped one as plain
        IPv4, so no dual-stack socket is needed), once every address of the host has passed.

        Raises InvalidRequestError (400, param base_url) naming the host, the address and the
        reason, nothing secret; the resolver's OSError (no such name) propagates."""
        name = _norm_host(host)
        literal = _literal(name)
        answers = [name] if literal is not None else await self._resolver(name, port)
        addrs = list(dict.fromkeys(ipaddress.ip_address(a) for a in answers))
        hint = "if this upstream is meant to be reachable, ask an admin to add it to the allow-list (allowed_addresses)"
        if not addrs:
            raise InvalidRequestError(f"base_url host '{host}' resolves to no address; {hint}", param="base_url")
        for addr in addrs:
            reason = refused_reason(str(addr))
            if reason is not None and not self._allowed(name, addr, port):
                shown = f"::ffff:{v4}" if (v4 := _mapped(addr)) else str(addr)
                raise InvalidRequestError(
                    f"base_url host '{host}' resolves to {shown} ({reason}), which hub mode does not "
                    f"connect to; {hint}", param="base_url")
        return str(_mapped(addrs[0]) or addrs[0])

    async def check_url(self, url: str) -> str:
        """check() for the host and port of a URL (port 443 for https, 80 for http)."""
        try:
            u = httpx.URL(url)
        except httpx.InvalidURL:
            u = httpx.URL()
        if u.scheme not in ("http", "https") or not u.raw_host:  # the URL is not echoed: it may hold a key
            raise InvalidRequestError("base_url is not an http(s) URL with a host", param="base_url")
        return await self.check(u.raw_host.decode("ascii"), u.port or (443 if u.scheme == "https" else 80))


class _Counted(httpx.AsyncByteStream):
    """A response body that tells its pool when it is closed, so busy pools are never evicted."""

    def __init__(self, stream: httpx.AsyncByteStream, done: Callable[[], None]) -> None:
        self._stream, self._done = stream, done

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            done, self._done = self._done, lambda: None
            done()


@dataclass
class _Pool:
    transport: httpx.AsyncBaseTransport
    busy: int = 0


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that checks every request with an AddressGuard and connects to the
    address checked: the URL's host becomes that IP, the Host header keeps the name, and for
    https the `sni_hostname` request extension (httpcore) makes TLS send and verify the name.

    A TLS connection is verified for one name, yet httpcore pools by the IP in the URL, so https
    gets one pool per (name, port): another name at the same IP never reuses it. At most
    `max_pools` are kept; beyond that idle ones are closed, oldest first. `transport` makes each
    pool's transport from `transport_kwargs` (httpx's own by default; UpstreamClient passes its
    aiohttp one, which honours `sni_hostname` too). `inner` (tests) is one transport for
    everything instead, shared across names."""

    def __init__(self, guard: AddressGuard, *, inner: httpx.AsyncBaseTransport | None = None,
                 max_pools: int = 64, transport: Callable[..., httpx.AsyncBaseTransport] = httpx.AsyncHTTPTransport,
                 **transport_kwargs: Any) -> None:
        if "proxy" in transport_kwargs or "uds" in transport_kwargs:
            raise ValueError("GuardedTransport connects to the checked address itself: no proxy or uds")
        self._guard, self._inner, self._max, self._make = guard, inner, max_pools, transport
        if inner is None:  # one SSL context for every pool: building one reads the CA bundle
            transport_kwargs["verify"] = httpx.create_ssl_context(
                verify=transport_kwargs.get("verify", True), cert=transport_kwargs.pop("cert", None),
                trust_env=transport_kwargs.get("trust_env", True))
        self._kwargs = transport_kwargs
        self._pools: OrderedDict[tuple[str, int] | None, _Pool] = OrderedDict()

    async def _pool(self, key: tuple[str, int] | None) -> _Pool:
        """The pool for key, made on first use; idle pools beyond max_pools close, oldest first.
        Nothing is awaited between the lookup and the insert, so two tasks share one pool."""
        pool, evicted = self._pools.get(key), []
        if pool is None:
            while len(self._pools) >= self._max:
                idle = next((k for k, p in self._pools.items() if p.busy == 0 and k is not None), None)
                if idle is None:
                    break
                evicted.append(self._pools.pop(idle))
            pool = self._pools[key] = _Pool(self._make(**self._kwargs))
        self._pools.move_to_end(key)
        for old in evicted:
            await old.transport.aclose()
        return pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Check, send to the checked address; the guard's refusal (a BodhiError) propagates, a
        failed or slow lookup is an httpx ConnectError / ConnectTimeout like any connect failure."""
        url, host = request.url, request.url.raw_host.decode("ascii")
        port = url.port or (443 if url.scheme == "https" else 80)
        timeout = request.extensions.get("timeout", {}).get("connect")
        try:
            ip = await asyncio.wait_for(self._guard.check(host, port), timeout)
        except asyncio.TimeoutError:
            raise httpx.ConnectTimeout(f"resolving {host} timed out", request=request) from None
        except OSError as exc:
            raise httpx.ConnectError(f"could not resolve {host}: {exc}", request=request) from None
        # A copy, so the caller's request (and response.request, redirects, logs) keeps the name.
        pinned = httpx.Request(request.method, url.copy_with(host=f"[{ip}]" if ":" in ip else ip),
                               headers=request.headers, stream=request.stream, extensions=request.extensions)
        pinned.headers.setdefault("Host", url.netloc.decode("ascii"))
        if url.scheme == "https":
            pinned.extensions["sni_hostname"] = host.rstrip(".")
        if self._inner is not None:
            return await self._inner.handle_async_request(pinned)
        pool = await self._pool((_norm_host(host), port) if url.scheme == "https" else None)
        pool.busy += 1
        try:
            response = await pool.transport.handle_async_request(pinned)
        except BaseException:
            pool.busy -= 1
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)

        def done() -> None:
            pool.busy -= 1

        return httpx.Response(response.status_code, headers=response.headers,
                              stream=_Counted(response.stream, done), extensions=response.extensions)

    async def aclose(self) -> None:
        """Close the inner transport (or every pool)."""
        if self._inner is not None:
            await self._inner.aclose()
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            await pool.transport.aclose()
