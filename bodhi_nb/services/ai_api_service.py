"""AiApiService: the one HTTP client to OpenAI-compatible upstreams (remote and local).

Both remote API models and the local llama.cpp engine are reached through `forward`
(chat completions and embeddings alike), so there is one forwarding path. Upstream
failures become `BodhiError`s with the status a caller expects; the API key only ever travels in the
upstream `Authorization` header and appears in no message. What comes back passes
through `KeyRedactor`, so a provider that quotes the key it received cannot leak it.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import logging
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..objs.api_model_alias import check_api_key, mask_api_key, normalize_base_url
from ..objs.errors import BodhiError, InvalidRequestError, UpstreamError
from .db import DbService

__all__ = [
    "AiApiService",
    "RawCredentials",
    "StoredCredentials",
    "Credentials",
    "credentials",
    "ForwardTarget",
    "KeyRedactor",
    "TestPromptResult",
    "UpstreamResponse",
    "MAX_TEST_PROMPT",
    "openai_error",
]

log = logging.getLogger(__name__)

MAX_TEST_PROMPT = 30
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


@dataclass(frozen=True)
class RawCredentials:
    """A base URL and key typed by the user, not (yet) stored."""

    base_url: str
    api_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class StoredCredentials:
    """Use the stored base URL and key of api model `id`."""

    id: str


Credentials = RawCredentials | StoredCredentials


def credentials(id: str | None, base_url: str | None, api_key: str | None) -> Credentials:
    """A stored api model's credentials when `id` is given, else the raw ones typed by the user."""
    if id is not None:
        return StoredCredentials(id)
    if base_url is None:
        raise InvalidRequestError("Give either 'id' of a stored API model or 'base_url' (and 'api_key').",
                                  param="base_url")
    return RawCredentials(base_url, api_key)


@dataclass(frozen=True)
class ForwardTarget:
    """Where one chat request goes: upstream base URL, key, and the upstream model id."""

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    label: str = "upstream"  # said in error messages, e.g. "API model 'openai'"


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
class TestPromptResult:
    success: bool
    response: str | None = None
    error: str | None = None


class UpstreamResponse:
    """An open upstream response: status, filtered headers, and its body as it arrives."""

    def __init__(self, response: httpx.Response, label: str, secret: str | None = None) -> None:
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

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def is_event_stream(self) -> bool:
        return self.headers.get("content-type", "").startswith("text/event-stream")

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


def checked_url(base_url: str, label: str) -> str:
    """A base URL about to be used, checked again by the one rule: a record written under
    an older, looser rule (CR/LF, a port out of range, credentials) is a clear 400 naming
    it, never a 500 or a request sent with the wrong credentials."""
    try:
        return normalize_base_url(base_url)
    except ValueError as exc:
        raise InvalidRequestError(f"The {label} cannot be used: {exc}. Update its base_url.",
                                  param="base_url") from None


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


class _NoCookies(http.cookiejar.CookieJar):
    """Upstream cookies are never kept: one provider's cookie must not ride along on the
    next request, and parsing them cost ~4% of the gateway's CPU per request."""

    def extract_cookies(self, response, request):  # type: ignore[no-untyped-def]
        return None

    def set_cookie(self, cookie):  # type: ignore[no-untyped-def]
        return None


class AiApiService:
    """HTTP to OpenAI-compatible upstreams; one httpx.AsyncClient per event loop."""

    def __init__(
        self,
        db: DbService | None = None,
        *,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        first_byte_timeout: float = 120.0,
    ) -> None:
        self._db = db
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.first_byte_timeout = first_byte_timeout
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None or client.is_closed:
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
                follow_redirects=False,
                trust_env=False,
                cookies=_NoCookies(),
            )
            self._clients[loop] = client
        return client

    async def aclose(self) -> None:
        """Close the client of the running loop (call on shutdown, from that loop)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    # -- credentials ----------------------------------------------------------------------

    def _resolve(self, creds: Credentials) -> tuple[str, str | None, str]:
        if isinstance(creds, StoredCredentials):
            if self._db is None:
                raise InvalidRequestError("No store is configured to look up stored credentials.")
            alias = self._db.get(creds.id)
            label = f"API model '{creds.id}'"
            return checked_url(alias.base_url, label), self._db.get_api_key(creds.id), label
        try:
            url = normalize_base_url(creds.base_url)
        except ValueError as exc:
            raise InvalidRequestError(str(exc), param="base_url") from None
        if creds.api_key is not None:
            try:
                check_api_key(creds.api_key)
            except ValueError as exc:
                raise InvalidRequestError(str(exc), param="api_key") from None
        return url, creds.api_key, "provider"

    @staticmethod
    def _headers(api_key: str | None, stream: bool = False) -> dict[str, str]:
        h = {"accept-encoding": "identity", "content-type": "application/json",
             "accept": "text/event-stream" if stream else "application/json"}
        if api_key:
            h["authorization"] = f"Bearer {api_key}"
        return h

    # -- operations -----------------------------------------------------------------------

    async def fetch_models(self, creds: Credentials) -> list[str]:
        """Upstream model ids in the order the upstream lists them."""
        base_url, key, label = await asyncio.to_thread(self._resolve, creds)  # may read the store
        try:
            r = await self._client().get(f"{base_url}/models", headers=self._headers(key))
        except httpx.HTTPError as exc:
            raise transport_error(exc, label) from None
        redactor = KeyRedactor(key)
        if not r.is_success:
            raise upstream_status_error(r.status_code, redactor.error_body(r.content),
                                        redactor.headers(dict(r.headers)), label)
        try:
            data = json.loads(redactor.body(r.content))["data"]
            return [str(m["id"]) for m in data]
        except (ValueError, KeyError, TypeError):
            raise UpstreamError(f"The {label} answered /models with something that is not an OpenAI model list.") from None

    async def test_prompt(self, creds: Credentials, model: str, prompt: str) -> TestPromptResult:
        """Send a short prompt; upstream failures come back as `success=False`, never raised."""
        if not model:
            raise InvalidRequestError("A model is needed for the test prompt.", param="model")
        base_url, key, label = await asyncio.to_thread(self._resolve, creds)  # may read the store
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 50,
                "stream": False}
        try:
            resp = await self.forward_chat_completion(ForwardTarget(base_url, model, key, label), body, stream=False)
            if not resp.ok:
                return TestPromptResult(False, error=(await resp.error()).message)
            text = (await resp.aread_json())[1]["choices"][0]["message"]["content"]
            return TestPromptResult(True, response=text or "")
        except BodhiError as exc:
            return TestPromptResult(False, error=exc.message)
        except (KeyError, IndexError, TypeError):
            return TestPromptResult(False, error=f"The {label} answered with something that is not a chat completion.")

    async def forward_chat_completion(self, target: ForwardTarget, body: dict[str, Any], stream: bool) -> UpstreamResponse:
        """POST `{base_url}/chat/completions` (model rewritten; `stream` set only where the body
        says otherwise, so a caller's body reaches the provider as it was sent); see `forward`."""
        if (body.get("stream") is True) != stream:
            body = {**body, "stream": stream}
        return await self.forward(target, "chat/completions", body, stream)

    async def forward(self, target: ForwardTarget, endpoint: str, body: dict[str, Any],
                      stream: bool = False) -> UpstreamResponse:
        """POST the body to `{base_url}/{endpoint}` (only the model rewritten) and return the
        open response, whatever its status. The one forwarding path: chat completions and
        embeddings, remote providers and the local engine all come through here.

        Connection failures raise `UpstreamError` (nothing has been sent to the caller yet);
        an upstream error status is returned as is, for the caller to relay.
        """
        payload = dict(body)
        payload["model"] = target.model
        client = self._client()
        timeout = (httpx.Timeout(None, connect=self.connect_timeout) if stream
                   else httpx.Timeout(self.timeout, connect=self.connect_timeout))
        req = client.build_request(
            "POST", f"{checked_url(target.base_url, target.label)}/{endpoint}",
            content=json.dumps(payload, separators=(",", ":")).encode(),
            headers=self._headers(target.api_key, stream), timeout=timeout,
        )
        t = time.perf_counter()
        try:
            send = client.send(req, stream=True)
            resp = await (asyncio.wait_for(send, self.first_byte_timeout) if stream else send)
        except (asyncio.TimeoutError, httpx.HTTPError) as exc:
            raise transport_error(exc, target.label) from None
        out = UpstreamResponse(resp, target.label, target.api_key)
        out.upstream_seconds = time.perf_counter() - t
        return out
