"""Private: an open upstream response, the key redactor, and the mapping of upstream failures.

What comes back from a provider (remote or the local engine) passes through here before it
reaches a client, a cache, a log line or an exception: headers are filtered, the key sent
is masked wherever the upstream quotes it, and error statuses become our `BodhiError`s
with the status a caller expects (docs/ARCHITECTURE.md, "Input rules and redaction").
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..objs.api_model_alias import mask_api_key
from ..objs.errors import BodhiError, UpstreamError
from ..objs.sse import MEDIA_TYPE

__all__ = ["ForwardTarget", "KeyRedactor", "UpstreamResponse", "openai_error", "transport_error", "upstream_status_error"]

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
     "transfer-encoding", "upgrade", "set-cookie", "content-length", "content-encoding", "date", "server"}
)


def _withhold_headers(record: logging.LogRecord) -> bool:
    """httpcore's DEBUG trace prints every upstream response header, and a provider may
    quote the key in one (WWW-Authenticate). Header-bearing trace lines keep their event
    name only; the request headers (our Authorization) are never in its trace."""
    if "headers" in str(record.msg):
        record.msg, record.args = str(record.msg).split(" ", 1)[0] + " (headers withheld by bodhi_nb)", ()
    return True


for _name in ("httpcore.http11", "httpcore.http2", "httpcore.connection", "httpcore.proxy", "httpcore.socks"):
    logging.getLogger(_name).addFilter(_withhold_headers)


class KeyRedactor:
    """Replaces one API key with its mask in whatever an upstream sends back.

    A provider may quote the key it received ("Incorrect API key provided: sk-..."), in an
    error body, a header or a mid-stream error event. This is the one place that text is
    cleaned before it reaches a client, a log line or an exception. It covers the key as
    sent and JSON-escaped (with and without an escaped "/").

    Error text (non-2xx bodies, messages) is always cleaned. Success bodies, streams and
    headers are cleaned when the key has at least `MIN_BODY_SECRET` characters: a shorter
    "key" is a placeholder such as "ollama" that can be an ordinary word of an answer, or
    part of the JSON itself, and replacing it there would corrupt good responses.
    """

    MIN_BODY_SECRET = 8
    __slots__ = ("_forms", "_text_forms", "_mask", "_mask_bytes", "_key_bytes", "_in_bodies")

    def __init__(self, secret: str | None) -> None:
        forms: set[str] = set()
        if secret:
            escaped = json.dumps(secret)[1:-1]
            forms = {secret, escaped, escaped.replace("/", "\\/")}
        self._text_forms = sorted(forms, key=len, reverse=True)
        self._forms = [f.encode() for f in self._text_forms]
        self._mask = mask_api_key(secret) if secret else ""
        self._mask_bytes = self._mask.encode()
        self._key_bytes = frozenset(b for f in self._forms for b in f)  # bytes a key is made of
        self._in_bodies = bool(secret) and len(secret or "") >= self.MIN_BODY_SECRET

    def __repr__(self) -> str:
        return "KeyRedactor(<hidden>)"

    def text(self, text: str) -> str:
        """Error text: every occurrence of the key, whatever its length, becomes its mask."""
        for f in self._text_forms:
            if f in text:
                text = text.replace(f, self._mask)
        return text

    def error_body(self, data: bytes) -> bytes:
        """A non-2xx body: always cleaned (a mangled error body is still an error)."""
        for f in self._forms:
            if f in data:
                data = data.replace(f, self._mask_bytes)
        return data

    def body(self, data: bytes) -> bytes:
        """A success body: cleaned when the key is long enough to be a real secret."""
        return self.error_body(data) if self._in_bodies else data

    def headers(self, headers: dict[str, str]) -> dict[str, str]:
        if not self._in_bodies:
            return headers
        return {k: self.text(v) for k, v in headers.items()}

    @property
    def streams(self) -> bool:
        """Whether `feed` has anything to do (else a stream can be relayed untouched)."""
        return self._in_bodies

    def feed(self, held: bytes, chunk: bytes) -> tuple[bytes, bytes]:
        """One stream chunk: (what can be sent now, what to hold until the next chunk).

        A chunk that ends in what could be the start of the key keeps that tail back, so a
        key split across two chunks is still found. SSE events end in a blank line, which
        no key starts with, so in practice nothing is ever held and streaming is not delayed.
        """
        data = self.body(held + chunk if held else chunk)
        if not data or data[-1] not in self._key_bytes:  # the usual case: no key can start in the tail
            return data, b""
        cut = len(data)
        for f in self._forms:
            i = max(len(data) - len(f) + 1, 0)
            while True:
                i = data.find(f[:1], i, cut)
                if i < 0:
                    break
                if f.startswith(data[i:]):
                    cut = i
                    break
                i += 1
        return data[:cut], data[cut:]


@dataclass(frozen=True)
class ForwardTarget:
    """Where one chat request goes: upstream base URL, key, and the upstream model id."""

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    label: str = "upstream"  # said in error messages, e.g. "API model 'openai'"
    api_format: str = "openai"  # the provider's wire format (ApiFormat's value)
    headers: Mapping[str, str] = field(default_factory=dict)  # sent with each forwarded request (labels, never keys)



class _ByteStream(httpx.AsyncByteStream):
    """An async body for `httpx.Response` whose `aclose` ends the generator (and with it every
    upstream response the generator holds open)."""

    def __init__(self, gen: AsyncIterator[bytes]) -> None:
        self._gen = gen

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._gen:
            yield chunk

    async def aclose(self) -> None:
        await self._gen.aclose()  # type: ignore[attr-defined]


class WholeBody:
    """An answer already read whole, as UpstreamResponse reads it (status, lower-case headers,
    body) without an httpx.Response around it: the direct whole-body path of UpstreamClient.send
    and every replayed answer."""

    __slots__ = ("status_code", "headers", "content", "error")

    def __init__(self, status: int, headers: dict[str, str], content: bytes,
                 error: httpx.HTTPError | None = None) -> None:
        """`error`: the body broke off while it was read (raised when it is read, as httpx does)."""
        self.status_code, self.headers, self.content, self.error = status, headers, content, error

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body as one chunk (or the read's failure), as an httpx body would arrive."""
        if self.error is not None:
            raise self.error
        if self.content:
            yield self.content

    async def aread(self) -> bytes:
        """The body (or the read's failure)."""
        if self.error is not None:
            raise self.error
        return self.content

    async def aclose(self) -> None:
        """Nothing to close: the connection went back to its pool when the body was read."""


class UpstreamResponse:
    """An open upstream response: status, filtered headers, and its body as it arrives."""

    def __init__(self, response: httpx.Response | WholeBody, label: str, secret: str | None = None) -> None:
        self._response = response
        self.label = label
        self.status = response.status_code
        # The key sent upstream, only as the redactor that masks it in what comes back.
        self._redactor = KeyRedactor(secret)
        self.headers = self._redactor.headers(
            {k: v for k, v in response.headers.items() if k.lower() not in _HOP_BY_HOP})
        # Time spent waiting on the upstream (open + body read), so the gateway can report
        # its own overhead as total time minus this.
        self.upstream_seconds = 0.0

    @classmethod
    def replayed(cls, status: int, headers: dict[str, str], body: bytes, label: str,
                 upstream_seconds: float = 0.0) -> UpstreamResponse:
        """A response already read (from the cache, or translated) that callers can read again."""
        out = cls(WholeBody(status, {k.lower(): v for k, v in headers.items()}, body), label)
        out.upstream_seconds = upstream_seconds
        return out

    @classmethod
    def streamed(cls, first: UpstreamResponse, body: AsyncIterator[bytes]) -> UpstreamResponse:
        """An SSE response whose events are `body` (made from `first`'s), with `first`'s
        headers and timing; closing it closes `body`, and whatever `body` holds open."""
        headers = {**first.headers, "content-type": MEDIA_TYPE}
        headers.pop("content-length", None)
        out = cls(httpx.Response(first.status, headers=headers, stream=_ByteStream(body)), first.label)
        out.upstream_seconds = first.upstream_seconds
        return out

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def is_event_stream(self) -> bool:
        return self.headers.get("content-type", "").startswith(MEDIA_TYPE)

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """Body bytes as they come off the socket (no re-buffering), with the key masked."""
        redact = self._redactor.streams
        held = b""
        try:
            async for chunk in self._response.aiter_raw():
                if redact:
                    chunk, held = self._redactor.feed(held, chunk)
                if chunk:
                    yield chunk
        except httpx.HTTPError as exc:
            raise UpstreamError(f"The {self.label} stream broke off: {_describe(exc)}") from None
        if held:
            yield held

    def redact(self, text: str) -> str:
        """Upstream error text (e.g. a mid-stream error event's message) with the key masked."""
        return self._redactor.text(text)

    async def aread(self) -> bytes:
        t = time.perf_counter()
        try:
            raw = await self._response.aread()
            return self._redactor.body(raw) if self.ok else self._redactor.error_body(raw)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"Reading the {self.label} response failed: {_describe(exc)}") from None
        finally:
            self.upstream_seconds += time.perf_counter() - t
            await self.aclose()

    async def aread_json(self) -> tuple[bytes, Any]:
        """The body, raw and parsed; a body that is not JSON is an upstream failure (502)."""
        raw = await self.aread()
        try:
            return raw, json.loads(raw)
        except ValueError:
            raise UpstreamError(f"The {self.label} answered with a body that is not JSON.") from None

    async def aclose(self) -> None:
        await self._response.aclose()

    async def error(self) -> BodhiError:
        """This (non-2xx) response as an error in the OpenAI envelope."""
        return upstream_status_error(self.status, await self.aread(), self.headers, self.label)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, httpx.ReadTimeout):
        return "no response before the timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host unreachable"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the connection closed unexpectedly"
    return type(exc).__name__


def openai_error(body: bytes) -> dict[str, Any] | None:
    """The `error` object of a body in the OpenAI error envelope, else None.

    The one parse of upstream error bodies: the HTTP route relays such a body as it is
    (already redacted), and every other caller reads its message through `upstream_status_error`.
    """
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err
    return None


def _upstream_message(body: bytes) -> str | None:
    err = openai_error(body)
    if err is not None:
        return str(err["message"])
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if isinstance(data, dict):
        for field in ("error", "message"):
            value = data.get(field)
            if isinstance(value, str):
                return value
    return None


def transport_error(exc: Exception, label: str) -> UpstreamError:
    """A failure before any response: timeouts are 504, everything else 502."""
    if isinstance(exc, asyncio.TimeoutError):  # our first-byte limit on streams
        return UpstreamError(f"The {label} did not start answering in time.", status=504, code="upstream_timeout")
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamError(f"The {label} did not answer in time: {_describe(exc)}.", status=504,
                             code="upstream_timeout")
    return UpstreamError(f"Could not reach the {label}: {_describe(exc)}.")


def upstream_status_error(status: int, body: bytes, headers: dict[str, str], label: str) -> BodhiError:
    """Map an upstream HTTP error to ours: same class of status, a readable message."""
    detail = _upstream_message(body)
    said = f": {detail}" if detail else ""
    # What a caller needs to retry well: Retry-After and the x-ratelimit-reset-* hints.
    keep = {k.lower(): v for k, v in headers.items()
            if k.lower() == "retry-after" or k.lower().startswith("x-ratelimit-reset")}
    if status in (401, 403):
        return UpstreamError(f"The {label} rejected the API key ({status}){said}", status=status,
                             code="upstream_unauthorized")
    if status == 404:
        return UpstreamError(f"The {label} answered 404 Not Found: check the base URL and model{said}",
                             status=404, code="upstream_not_found")
    if status == 429:
        wait = f" (retry after {keep['retry-after']} s)" if "retry-after" in keep else ""
        return UpstreamError(f"The {label} is rate limiting requests{wait}{said}", status=429,
                             code="rate_limit_exceeded", headers=keep)
    if 400 <= status < 500:
        return UpstreamError(f"The {label} refused the request ({status}){said}", status=status,
                             code="upstream_bad_request")
    # An upstream 5xx keeps its status on every surface (the HTTP route relays it as is);
    # anything else that is not an error status is a broken upstream: 502.
    return UpstreamError(f"The {label} failed ({status}){said}", status=status if status >= 500 else 502,
                         code="upstream_error", headers=keep)
