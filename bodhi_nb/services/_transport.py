"""Private: the HTTP transport under UpstreamClient's httpx clients: aiohttp's connection pool and
C-accelerated HTTP/1.1 parser, through httpx-aiohttp's transport.

The httpx API stays for management calls (files, batch polling, model lists): only the bytes on
the socket move to aiohttp. A whole-body forward skips httpx altogether (`post_whole`, on the
same session): the loop's CPU per request is what a 100,000-row batch on the server's own loop
is bound by (benchmarks/README.md, "Batch jobs").

httpx-aiohttp maps aiohttp's exceptions coarsely (a refused connection or a server that hangs up
both become `ConnectTimeout`, and an unlisted one escapes as aiohttp's own). Here every aiohttp
failure, before the response or while its body streams, becomes the httpx exception that says
what happened, so `_upstream.transport_error` words it as it does for httpcore.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from ._upstream import WholeBody

__all__ = ["USER_AGENT", "UpstreamTransport", "httpx_error"]

USER_AGENT = "bodhi_nb"  # every client's (aiohttp's session, httpx's clients): a provider sees one client


def httpx_error(exc: BaseException, request: httpx.Request | None = None) -> BaseException:
    """The httpx exception for an aiohttp failure (or one httpx-aiohttp already mapped, judged by
    the aiohttp error it came from); anything else as it is."""
    cause = exc.__cause__ if isinstance(exc, httpx.HTTPError) and exc.__cause__ is not None else exc
    kind: type[httpx.TransportError] | None
    if isinstance(cause, aiohttp.ConnectionTimeoutError):
        kind = httpx.ConnectTimeout
    elif isinstance(cause, (aiohttp.SocketTimeoutError, aiohttp.ServerTimeoutError)):
        kind = httpx.ReadTimeout
    elif isinstance(cause, aiohttp.ClientConnectorError):  # refused, unreachable, DNS, TLS handshake
        kind = httpx.ConnectError
    elif isinstance(cause, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError,
                            aiohttp.ClientResponseError)):  # hung up, a cut body, not HTTP
        kind = httpx.RemoteProtocolError
    elif isinstance(cause, (aiohttp.NonHttpUrlClientError, aiohttp.InvalidURL)):
        kind = httpx.UnsupportedProtocol
    elif isinstance(cause, aiohttp.ClientOSError):  # reset by peer, broken pipe
        kind = httpx.ReadError
    elif isinstance(cause, aiohttp.ClientError):
        kind = httpx.TransportError
    else:
        return exc
    return kind(str(cause) or type(cause).__name__, request=request)


class _Body(httpx.AsyncByteStream):
    """A response body from aiohttp, its failures raised as httpx's."""

    def __init__(self, inner: httpx.AsyncByteStream, request: httpx.Request) -> None:
        self._inner, self._request = inner, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except (aiohttp.ClientError, httpx.HTTPError) as exc:
            raise httpx_error(exc, self._request) from None

    async def aclose(self) -> None:
        # An unread body closes the connection instead of returning it to the pool (so an upstream
        # still generating sees the caller go away); a failure while closing says nothing new.
        try:
            await self._inner.aclose()
        except (aiohttp.ClientError, httpx.HTTPError, OSError):
            pass


class UpstreamTransport(AiohttpTransport):
    """httpx-aiohttp's transport with bodhi_nb's rules: one aiohttp session per transport, made
    on the loop that first uses it; no cookies kept (one provider's cookie must not ride along on
    the next request); no proxy or .netrc from the environment; bodies as the upstream sent them
    (httpx decodes); `limits.max_connections` at once; idle connections kept
    `limits.keepalive_expiry` seconds."""

    def __init__(self, *, limits: httpx.Limits = httpx.Limits(max_connections=200, max_keepalive_connections=50),
                 verify: ssl.SSLContext | bool = True, **_: Any) -> None:
        super().__init__(verify=verify, limits=limits, trust_env=False, client=self._session)

    def _session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self.limits.max_connections or 0, ssl=self.ssl_context,
                                         keepalive_timeout=self.limits.keepalive_expiry or 5.0)
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
                                     auto_decompress=False, headers={"user-agent": USER_AGENT})

    async def post_whole(self, url: str, headers: dict[str, str], content: bytes, timeout: httpx.Timeout) -> WholeBody:
        """POST `content` and read the whole answer on this transport's aiohttp session, with no
        httpx Request or Response around it: at 64 requests in flight a forward costs the loop
        0.28 ms of CPU this way, 0.61 ms when it went through httpx (benchmarks/README.md, "Batch
        jobs"). The same rules as a request through httpx: no redirect followed, no cookie kept,
        a compressed body decoded (an upstream may compress though asked not to); failures raised
        as httpx's exceptions."""
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        limits = aiohttp.ClientTimeout(sock_connect=timeout.connect, sock_read=timeout.read, connect=timeout.pool)
        try:
            async with self.client.post(url, data=content, headers=headers, allow_redirects=False, compress=False,
                                        auto_decompress=True, timeout=limits) as r:
                merged: dict[str, str] = {}
                for k, v in r.headers.items():  # as httpx gives them: lower-case, repeats joined
                    k = k.lower()
                    merged[k] = f"{merged[k]}, {v}" if k in merged else v
                try:
                    return WholeBody(r.status, merged, await r.read())
                except aiohttp.ClientError as exc:  # the answer began, then broke off: a failed read
                    failed = httpx_error(exc)
                    return WholeBody(r.status, merged, b"", failed if isinstance(failed, httpx.HTTPError)
                                     else httpx.ReadError(str(exc)))
        except aiohttp.ClientError as exc:
            raise httpx_error(exc) from None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await super().handle_async_request(request)
        except (aiohttp.ClientError, httpx.HTTPError) as exc:
            raise httpx_error(exc, request) from None
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Body(response.stream, request)
        return response
