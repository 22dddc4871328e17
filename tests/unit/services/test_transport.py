"""UpstreamClient's aiohttp transport (services/_transport.py) against raw servers on 127.0.0.1:
what reaches the socket, streaming as it arrives, and every kind of failure worded as for httpx's
own transport (a refused port, a hang-up, a cut body, a silent server, a reset)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import httpx
import pytest

from bodhi_nb.objs import UpstreamError
from bodhi_nb.services._transport import UpstreamTransport, httpx_error
from bodhi_nb.services.address_guard import AddressGuard
from bodhi_nb.services.upstream_client import DEFAULT_TRANSPORT, ForwardTarget, UpstreamClient
from tests.conftest import TEST_KEY

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return head, await reader.readexactly(length)


def reply(body: bytes, *, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%b\r\n%b"
            % (len(body), extra, body))


def target(port: int) -> ForwardTarget:
    return ForwardTarget(f"http://127.0.0.1:{port}/v1", "up-model", TEST_KEY, "API model 'p'")


def test_the_product_default_is_the_aiohttp_transport():
    assert DEFAULT_TRANSPORT is UpstreamTransport


def test_what_reaches_the_socket_and_no_cookie_or_proxy_from_the_environment(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # a proxy that is not there: never used
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    heads: list[bytes] = []
    bodies: list[bytes] = []

    async def handler(reader, writer):
        while True:
            try:
                head, body = await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            heads.append(head)
            bodies.append(body)
            writer.write(reply(b'{"ok": 1}', extra=b"set-cookie: s=abc; Path=/\r\n"))
            await writer.drain()
        writer.close()

    async def go():
        svc = UpstreamClient()
        async with raw_server(handler) as port:
            for _ in range(2):
                r = await svc.forward(target(port), "chat/completions", {"model": "asked", "x": [1]})
                assert r.status == 200 and (await r.aread_json())[1] == {"ok": 1}
        await svc.aclose()

    asyncio.run(go())
    first = heads[0].decode().lower()
    assert first.startswith("post /v1/chat/completions http/1.1\r\n")
    assert f"authorization: bearer {TEST_KEY.lower()}\r\n" in first and "content-type: application/json" in first
    assert "user-agent: bodhi_nb\r\n" in first  # whichever client sends it
    assert bodies[0] == b'{"model":"up-model","x":[1]}'  # only the model rewritten, sent as built
    assert all(b"cookie" not in h.lower() for h in heads)  # the first answer's Set-Cookie is not kept
    assert len(heads) == 2  # both on one kept-alive connection (the handler served them in one loop)


def test_a_whole_body_skips_httpx_and_reads_as_it_would_through_httpx():
    """Whole bodies go straight on aiohttp's session; what a caller reads (status, headers, body)
    is what the same answer gives through httpx's own transport. Streams, the hub's address guard
    and a test's own transport keep httpx."""
    packed = gzip.compress(b'{"ok": 2}')  # compressed, though asked for identity: read decoded either way

    async def handler(reader, writer):
        await read_request(reader)
        writer.write(reply(packed, extra=b"Content-Encoding: gzip\r\nX-Request-Id: r-1\r\nVary: a\r\nVary: b\r\n"))
        await writer.drain()
        writer.close()

    async def read(svc: UpstreamClient) -> tuple:
        async with raw_server(handler) as port:
            r = await svc.forward(target(port), "chat/completions", {"model": "m"})
            out = (r.status, r.headers, await r.aread_json(), svc._direct_transport() is not None)
        await svc.aclose()
        return out

    direct = asyncio.run(read(UpstreamClient()))
    through_httpx = asyncio.run(read(UpstreamClient(transport=httpx.AsyncHTTPTransport)))
    assert direct[3] and not through_httpx[3]
    assert direct[:3] == through_httpx[:3]
    assert direct[1]["x-request-id"] == "r-1" and direct[1]["vary"] == "a, b"
    assert direct[2][1] == {"ok": 2} and "content-encoding" not in direct[1]

    async def guarded() -> bool:
        svc = UpstreamClient(address_guard=AddressGuard(allow=["127.0.0.1"]))
        try:
            return svc._direct_transport() is None
        finally:
            await svc.aclose()

    assert asyncio.run(guarded())


def test_a_stream_arrives_as_the_upstream_sends_it():
    """The second event is written only after the client has read the first: nothing buffers."""
    seen_first = asyncio.Event()

    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for event in (b"data: one\n\n", None, b"data: two\n\n", b""):
            if event is None:
                await asyncio.wait_for(seen_first.wait(), 10)
                continue
            writer.write(b"%x\r\n%b\r\n" % (len(event), event))
            await writer.drain()
        writer.close()

    async def go():
        svc = UpstreamClient()
        got = []
        async with raw_server(handler) as port:
            r = await svc.forward(target(port), "chat/completions", {"stream": True}, stream=True)
            async for chunk in r.aiter_bytes():
                got.append(chunk)
                seen_first.set()
            await r.aclose()
        await svc.aclose()
        return got

    assert b"".join(asyncio.run(go())) == b"data: one\n\ndata: two\n\n"


def test_closing_an_unread_stream_hangs_up_on_the_upstream():
    gone = asyncio.Event()

    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                     b"b\r\ndata: one\n\n\r\n")
        await writer.drain()
        await reader.read()  # returns once the client's side is closed
        gone.set()

    async def go():
        svc = UpstreamClient()
        async with raw_server(handler) as port:
            r = await svc.forward(target(port), "chat/completions", {"stream": True}, stream=True)
            async for _ in r.aiter_bytes():
                break
            await r.aclose()
            await asyncio.wait_for(gone.wait(), 10)
        await svc.aclose()

    asyncio.run(go())
    assert gone.is_set()


async def _hang_up(reader, writer):
    await read_request(reader)
    writer.close()


async def _cut_body(reader, writer):
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"a\": ")
    await writer.drain()
    writer.close()


async def _silent(reader, writer):
    await read_request(reader)
    await asyncio.sleep(30)


async def _not_http(reader, writer):
    await read_request(reader)
    writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
    await writer.drain()
    writer.close()


@pytest.mark.parametrize(("handler", "status", "words"), [
    (None, 502, "Could not reach the API model 'p': connection refused or host unreachable."),
    (_hang_up, 502, "Could not reach the API model 'p': the connection closed unexpectedly."),
    (_cut_body, 502, "Reading the API model 'p' response failed: the connection closed unexpectedly"),
    (_silent, 504, "The API model 'p' did not answer in time: no response before the timeout."),
    (_not_http, 502, "Could not reach the API model 'p': the connection closed unexpectedly."),
])
def test_each_failure_is_worded_as_for_httpx_own_transport(handler, status, words):
    async def go():
        svc = UpstreamClient(timeout=0.5)
        try:
            if handler is None:
                async with raw_server(_hang_up) as port:
                    pass  # closed again: nothing listens there now
                r = await svc.forward(target(port), "chat/completions", {})
            else:
                async with raw_server(handler) as port:
                    r = await svc.forward(target(port), "chat/completions", {})
                    await r.aread()
        finally:
            await svc.aclose()

    with pytest.raises(UpstreamError) as err:
        asyncio.run(go())
    assert err.value.status == status and err.value.message == words
    assert TEST_KEY not in repr(err.value) and err.value.__cause__ is None


def test_every_aiohttp_failure_maps_to_an_httpx_exception():
    req = httpx.Request("GET", "http://127.0.0.1:1/")
    key = aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None)
    cases = [
        (aiohttp.ConnectionTimeoutError(), httpx.ConnectTimeout),
        (aiohttp.SocketTimeoutError(), httpx.ReadTimeout),
        (aiohttp.ClientConnectorError(key, OSError(111, "refused")), httpx.ConnectError),
        (aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError),
        (aiohttp.ClientPayloadError("cut"), httpx.RemoteProtocolError),
        (aiohttp.ClientOSError(104, "reset by peer"), httpx.ReadError),
        (aiohttp.InvalidURL("x"), httpx.UnsupportedProtocol),
        (aiohttp.ClientError("other"), httpx.TransportError),
    ]
    for exc, kind in cases:
        assert type(httpx_error(exc, req)) is kind, exc
        wrapped = httpx.ConnectTimeout("coarse")  # what httpx-aiohttp made of it
        wrapped.__cause__ = exc
        assert type(httpx_error(wrapped, req)) is kind, exc
    other = ValueError("not ours")
    assert httpx_error(other) is other
