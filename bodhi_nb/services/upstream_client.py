"""UpstreamClient: the one HTTP client to OpenAI-compatible upstreams (remote and local).

What comes back passes through `_upstream.py` (filtered headers, the key masked, errors mapped).

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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from ..objs.api_model_alias import MAX_TEST_PROMPT, check_api_key, normalize_base_url
from ..objs.dialects.base import UpstreamWire
from ..objs.errors import BodhiError, InvalidRequestError, UpstreamError
from ..objs.openai import build_messages, completion_text
from ..objs.sse import MEDIA_TYPE
from . import _formats
from ._transport import USER_AGENT, UpstreamTransport
from ._upstream import (
    ForwardTarget,
    KeyRedactor,
    UpstreamResponse,
    openai_error,
    transport_error,
    upstream_status_error,
)
from .address_guard import AddressGuard, GuardedTransport
from .db import ConfigStore

__all__ = [
    "UpstreamClient",
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
    "transport_error",
    "upstream_status_error",
]

log = logging.getLogger(__name__)

Transport = Callable[..., httpx.AsyncBaseTransport]
"""Makes one client's transport from `limits=` (and `verify=`): services/_transport.py's by default."""
DEFAULT_TRANSPORT: Transport = UpstreamTransport
STREAM_TRANSPORT: Transport = httpx.AsyncHTTPTransport
"""Streamed responses go over httpcore: when a connection breaks, aiohttp drops the bytes it had
already received but not yet handed over (its reader raises before returning its buffer), so the
chunks an upstream sent just before it cut a stream would be lost; httpcore hands them over first."""


@dataclass(frozen=True)
class RawCredentials:
    """A base URL and key typed by the user, not (yet) stored."""

    base_url: str
    api_key: str | None = field(default=None, repr=False)
    api_format: str = "openai"


@dataclass(frozen=True)
class StoredCredentials:
    """Use the stored base URL and key of api model `id`."""

    id: str


Credentials = RawCredentials | StoredCredentials


def credentials(id: str | None, base_url: str | None, api_key: str | None, api_format: str = "openai") -> Credentials:
    """A stored api model's credentials when `id` is given, else the raw ones typed by the user."""
    if id is not None:
        return StoredCredentials(id)
    if base_url is None:
        raise InvalidRequestError("Give either 'id' of a stored API model or 'base_url' (and 'api_key').",
                                  param="base_url")
    return RawCredentials(base_url, api_key, api_format)


@dataclass(frozen=True)
class TestPromptResult:
    success: bool
    response: str | None = None
    error: str | None = None


def checked_url(base_url: str, label: str) -> str:
    """A base URL about to be used, checked again by the one rule: a record written under
    an older, looser rule (CR/LF, a port out of range, credentials) is a clear 400 naming
    it, never a 500 or a request sent with the wrong credentials."""
    try:
        return normalize_base_url(base_url)
    except ValueError as exc:
        raise InvalidRequestError(f"The {label} cannot be used: {exc}. Update its base_url.",
                                  param="base_url") from None


class _NoCookies(http.cookiejar.CookieJar):
    """Upstream cookies are never kept: one provider's cookie must not ride along on the
    next request, and parsing them cost ~4% of the gateway's CPU per request."""

    def extract_cookies(self, response, request):  # type: ignore[no-untyped-def]
        return None

    def set_cookie(self, cookie):  # type: ignore[no-untyped-def]
        return None


class UpstreamClient:
    """HTTP to OpenAI-compatible upstreams; per event loop one httpx.AsyncClient for whole bodies
    and one for streams."""

    def __init__(
        self,
        db: ConfigStore | None = None,
        *,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        first_byte_timeout: float = 120.0,
        address_guard: AddressGuard | None = None,
        transport: Transport | None = None,
    ) -> None:
        self._db = db
        # aiohttp's pool under httpx (services/_transport.py); tests that mock httpcore pass httpx's own.
        self._transport = transport or DEFAULT_TRANSPORT
        # The hub service's address rule, at connection time: each request goes to the address that
        # was checked (services/address_guard.py); creating or changing an API model checks it too.
        self.address_guard = address_guard
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.first_byte_timeout = first_byte_timeout
        # Per event loop (an httpx client belongs to the loop it first ran on): one client for
        # whole bodies, one for streamed responses (STREAM_TRANSPORT says why).
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[bool, httpx.AsyncClient]] = (
            weakref.WeakKeyDictionary()
        )
        # The whole-body client's transport, per loop, when requests can skip httpx (`send`).
        self._direct: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, UpstreamTransport] = (
            weakref.WeakKeyDictionary()
        )

    def _client(self, stream: bool = False) -> httpx.AsyncClient:
        """This loop's client for whole bodies, or for a streamed response."""
        loop = asyncio.get_running_loop()
        clients = self._clients.setdefault(loop, {})
        client = clients.get(stream)
        if client is None or client.is_closed:
            client, transport = self._new_client(STREAM_TRANSPORT if stream else self._transport)
            clients[stream] = client
            if not stream and isinstance(transport, UpstreamTransport):
                self._direct[loop] = transport
        return client

    def _direct_transport(self) -> UpstreamTransport | None:
        """The aiohttp transport a whole body goes over without httpx: none in hub mode (the
        address guard's transport checks each connection), nor with a test's own transport."""
        self._client()  # (made on first use, and with it its transport)
        return self._direct.get(asyncio.get_running_loop())

    def _new_client(self, transport: Transport) -> tuple[httpx.AsyncClient, httpx.AsyncBaseTransport]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        guard = self.address_guard
        under = (transport(limits=limits) if guard is None
                 else GuardedTransport(guard, limits=limits, transport=transport))
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
            transport=under,
            follow_redirects=False,
            trust_env=False,
            cookies=_NoCookies(),
            headers={"user-agent": USER_AGENT},
        )
        return client, under

    async def aclose(self) -> None:
        """Close the clients of the running loop (call on shutdown, from that loop)."""
        self._direct.pop(asyncio.get_running_loop(), None)  # (closed with the whole-body client)
        for client in self._clients.pop(asyncio.get_running_loop(), {}).values():
            await client.aclose()

    # -- credentials ----------------------------------------------------------------------

    def _resolve(self, creds: Credentials) -> tuple[str, str | None, str, str]:
        """Base URL, key, label and wire format of the credentials."""
        if isinstance(creds, StoredCredentials):
            if self._db is None:
                raise InvalidRequestError("No store is configured to look up stored credentials.")
            alias = self._db.get(creds.id)
            label = f"API model '{creds.id}'"
            return (checked_url(alias.base_url, label), self._db.get_api_key(creds.id), label,
                    alias.api_format.value)
        try:
            url = normalize_base_url(creds.base_url)
        except ValueError as exc:
            raise InvalidRequestError(str(exc), param="base_url") from None
        if creds.api_key is not None:
            try:
                check_api_key(creds.api_key)
            except ValueError as exc:
                raise InvalidRequestError(str(exc), param="api_key") from None
        return url, creds.api_key, "provider", creds.api_format

    @staticmethod
    def _headers(api_key: str | None, stream: bool = False) -> dict[str, str]:
        h = {"accept-encoding": "identity", "content-type": "application/json",
             "accept": MEDIA_TYPE if stream else "application/json"}
        return {**h, **UpstreamClient._auth(api_key)}

    @staticmethod
    def _auth(api_key: str | None) -> dict[str, str]:
        """OpenAI's auth header (other formats bring theirs in their wire)."""
        return {"authorization": f"Bearer {api_key}"} if api_key else {}

    async def get(self, base_url: str, wire: UpstreamWire, key: str | None, label: str) -> bytes:
        """GET `{base_url}/{wire.path}`: the body with the key masked; an error status raises."""
        try:
            r = await self._client().get(f"{base_url}/{wire.path}", params=wire.params or None,
                                         headers={**self._headers(None), **wire.headers})
        except httpx.HTTPError as exc:
            raise transport_error(exc, label) from None
        return _checked(r, key, label)

    # -- a provider's own batch API (services/batch_store.py keeps the state) --------------

    async def _call(self, target: ForwardTarget, method: str, path: str, *, headers: dict[str, str] | None = None,
                    **kw: Any) -> bytes:
        """One management call to a provider (`headers`: its auth headers; default the Bearer key):
        the body with the key masked; an error status or no connection raises, in our words."""
        auth = headers if headers is not None else self._auth(target.api_key)
        try:
            r = await self._client().request(method, f"{checked_url(target.base_url, target.label)}/{path}",
                                             headers={**self._headers(None), **auth}, timeout=self.timeout, **kw)
        except httpx.HTTPError as exc:
            raise transport_error(exc, target.label) from None
        return _checked(r, target.api_key, target.label)

    async def _json(self, raw: bytes, label: str) -> Any:
        try:
            return json.loads(raw)
        except ValueError:
            raise UpstreamError(f"The {label} answered with a body that is not JSON.") from None

    async def post_json(self, target: ForwardTarget, path: str, body: dict[str, Any], *,
                        headers: dict[str, str] | None = None) -> Any:
        raw = await self._call(target, "POST", path, headers=headers,
                               content=json.dumps(body, separators=(",", ":")).encode())
        return await self._json(raw, target.label)

    async def get_json(self, target: ForwardTarget, path: str, *, headers: dict[str, str] | None = None) -> Any:
        return await self._json(await self._call(target, "GET", path, headers=headers), target.label)

    async def get_bytes(self, target: ForwardTarget, path: str, *, headers: dict[str, str] | None = None) -> bytes:
        return await self._call(target, "GET", path, headers=headers)

    async def upload_file(self, target: ForwardTarget, path: str, file: Path, filename: str,
                          fields: dict[str, str]) -> Any:
        """POST a file as multipart/form-data (read from disk as it is sent)."""
        auth = self._auth(target.api_key)
        with file.open("rb") as fh:
            try:
                r = await self._client().post(f"{checked_url(target.base_url, target.label)}/{path}",
                                              headers=auth, data=fields, files={"file": (filename, fh)},
                                              timeout=self.timeout)
            except httpx.HTTPError as exc:
                raise transport_error(exc, target.label) from None
        return await self._json(_checked(r, target.api_key, target.label), target.label)

    # -- operations -----------------------------------------------------------------------

    async def fetch_models(self, creds: Credentials) -> list[str]:
        """Upstream model ids in the order the upstream lists them."""
        base_url, key, label, api_format = await asyncio.to_thread(self._resolve, creds)  # may read the store
        if api_format != "openai":
            return await _formats.models(self, base_url, key, label, api_format)
        try:
            r = await self._client().get(f"{base_url}/models", headers=self._headers(key))
        except httpx.HTTPError as exc:
            raise transport_error(exc, label) from None
        body = _checked(r, key, label)
        try:
            data = json.loads(body)["data"]
            return [str(m["id"]) for m in data]
        except (ValueError, KeyError, TypeError):
            raise UpstreamError(f"The {label} answered /models with something that is not an OpenAI model list.") from None

    async def test_prompt(self, creds: Credentials, model: str, prompt: str) -> TestPromptResult:
        """Send a short prompt; upstream failures come back as `success=False`, never raised."""
        if not model:
            raise InvalidRequestError("A model is needed for the test prompt.", param="model")
        base_url, key, label, api_format = await asyncio.to_thread(self._resolve, creds)  # may read the store
        body = {"model": model, "messages": build_messages(prompt), "max_tokens": 50, "stream": False}
        try:
            target = ForwardTarget(base_url, model, key, label, api_format)
            resp = await self.forward_chat_completion(target, body, stream=False)
            if not resp.ok:
                return TestPromptResult(False, error=(await resp.error()).message)
            text = completion_text((await resp.aread_json())[1])
        except BodhiError as exc:
            return TestPromptResult(False, error=exc.message)
        if text is None:
            return TestPromptResult(False, error=f"The {label} answered with something that is not a chat completion.")
        return TestPromptResult(True, response=text)

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
        if target.api_format != "openai":
            return await _formats.forward_chat(self, target, endpoint, body, stream)
        payload = dict(body)
        payload["model"] = target.model
        return await self.send(target, UpstreamWire(endpoint, {**target.headers, **self._auth(target.api_key)}, {}),
                               payload, stream)

    async def forward_native(self, target: ForwardTarget, body: dict[str, Any], stream: bool,
                             path: str | None = None) -> UpstreamResponse:
        """A body already in the provider's own format (`target.api_format`), relayed as it is
        apart from the model name, and its answer as the provider gave it (see `forward`)."""
        return await _formats.forward_native(self, target, body, stream, path)

    async def send(self, target: ForwardTarget, wire: UpstreamWire, payload: dict[str, Any],
                   stream: bool) -> UpstreamResponse:
        """POST `payload` to `{base_url}/{wire.path}` with the wire's headers and query, and return
        the open response whatever its status (connection failures raise `UpstreamError`)."""
        timeout = (httpx.Timeout(None, connect=self.connect_timeout) if stream
                   else httpx.Timeout(self.timeout, connect=self.connect_timeout))
        url = f"{checked_url(target.base_url, target.label)}/{wire.path}"
        content = json.dumps(payload, separators=(",", ":")).encode()
        headers = {**self._headers(None, stream), **wire.headers}
        direct = None if stream else self._direct_transport()
        t = time.perf_counter()
        if direct is not None:  # a whole body: straight on aiohttp's session (services/_transport.py)
            try:
                whole = await direct.post_whole(f"{url}?{urlencode(wire.params)}" if wire.params else url,
                                                headers, content, timeout)
            except httpx.HTTPError as exc:
                raise transport_error(exc, target.label) from None
            out = UpstreamResponse(whole, target.label, target.api_key)
            out.upstream_seconds = time.perf_counter() - t
            return out
        client = self._client(stream)
        req = client.build_request("POST", url, params=wire.params or None, content=content, headers=headers,
                                   timeout=timeout)
        try:
            send = client.send(req, stream=True)
            resp = await (asyncio.wait_for(send, self.first_byte_timeout) if stream else send)
        except (asyncio.TimeoutError, httpx.HTTPError) as exc:
            raise transport_error(exc, target.label) from None
        out = UpstreamResponse(resp, target.label, target.api_key)
        out.upstream_seconds = time.perf_counter() - t
        return out


def _checked(r: httpx.Response, key: str | None, label: str) -> bytes:
    """A management call's body with the key masked; an error status raises, in our words."""
    redactor = KeyRedactor(key)
    if not r.is_success:
        raise upstream_status_error(r.status_code, redactor.error_body(r.content),
                                    redactor.headers(dict(r.headers)), label)
    return redactor.body(r.content)
