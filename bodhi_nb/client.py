"""Bodhi: the in-notebook facade over the same services the server extension uses.

Every call works in a running Jupyter kernel: sync methods wait on bodhi_nb's private
I/O loop, async twins (`achat`, `acompletion`, ...) await it without blocking the
kernel's loop. No nest_asyncio.
"""

from __future__ import annotations

import asyncio
import atexit
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ._loop_thread import LoopThread
from .objs.api_model_alias import ApiModelAlias
from .objs.errors import InvalidRequestError
from .server_core.app_services import AppServices
from .server_core.model_router import Candidate, Destination
from .services.ai_api_service import credentials
from .services.data_service import validation_message

__all__ = ["Bodhi", "ApiModels", "Aliases"]

Messages = str | list[dict[str, Any]]


def _messages(text_or_messages: Messages, system: str | None) -> list[dict[str, Any]]:
    msgs = ([{"role": "user", "content": text_or_messages}] if isinstance(text_or_messages, str)
            else list(text_or_messages))
    if system:
        msgs = [{"role": "system", "content": system}, *msgs]
    return msgs


class ApiModels:
    """Remote providers: create, get, list, update, delete, test, fetch_models."""

    def __init__(self, bodhi: "Bodhi") -> None:
        self._b = bodhi
        self._db = bodhi.services.db

    def __repr__(self) -> str:
        return f"<ApiModels {len(self._db.all())} registered>"

    def create(self, id: str, base_url: str, api_key: str | None = None, models: list[str] | None = None,
               prefix: str | None = None, forward_all_with_prefix: bool = False) -> dict[str, Any]:
        try:
            alias = ApiModelAlias(id=id, base_url=base_url, models=models or [], prefix=prefix,
                                  forward_all_with_prefix=forward_all_with_prefix)
        except ValidationError as exc:
            msg, param = validation_message(exc)
            raise InvalidRequestError(msg, param=param) from None
        return self._db.create(alias, api_key).public()

    def get(self, id: str) -> dict[str, Any]:
        return self._db.record(id).public()

    def list(self, page: int = 1, page_size: int = 100) -> list[dict[str, Any]]:
        return [r.public() for r in self._db.list(page, page_size)[0]]

    def update(self, id: str, *, api_key: str | None = None, **changes: Any) -> dict[str, Any]:
        """Change fields; leave `api_key` out to keep the stored key."""
        try:
            return self._db.update(id, changes, api_key=api_key).public()
        except ValidationError as exc:
            msg, param = validation_message(exc)
            raise InvalidRequestError(msg, param=param) from None

    def delete(self, id: str) -> None:
        self._db.delete(id)

    def test(self, model: str, prompt: str = "Say hello", *, id: str | None = None, base_url: str | None = None,
             api_key: str | None = None) -> dict[str, Any]:
        """Send a short prompt (at most 30 characters); failures come back as success=False."""
        creds = credentials(id, base_url, api_key)
        return asdict(self._b._loop.run(self._b.services.ai_api.test_prompt(creds, model, prompt)))

    async def atest(self, model: str, prompt: str = "Say hello", *, id: str | None = None,
                    base_url: str | None = None, api_key: str | None = None) -> dict[str, Any]:
        creds = credentials(id, base_url, api_key)
        return asdict(await self._b._loop.arun(self._b.services.ai_api.test_prompt(creds, model, prompt)))

    def fetch_models(self, id: str | None = None, *, base_url: str | None = None,
                     api_key: str | None = None) -> list[str]:
        return self._b._loop.run(self._b.services.ai_api.fetch_models(credentials(id, base_url, api_key)))

    async def afetch_models(self, id: str | None = None, *, base_url: str | None = None,
                            api_key: str | None = None) -> list[str]:
        return await self._b._loop.arun(self._b.services.ai_api.fetch_models(credentials(id, base_url, api_key)))


class Aliases:
    """Local user aliases (YAML files) and discovered models."""

    def __init__(self, bodhi: "Bodhi") -> None:
        self._data = bodhi.services.data

    def __repr__(self) -> str:
        return f"<Aliases {len(self._data.list_user_aliases()[0])} user aliases>"

    def list(self) -> list[dict[str, Any]]:
        return [a.model_dump(mode="json") for a in self._data.list_user_aliases()[0]]

    def models(self) -> list[dict[str, Any]]:
        """Discovered GGUF models (Hugging Face cache and the bundled one)."""
        return [m.model_dump(mode="json") for m in self._data.list_model_aliases()]

    def get(self, alias: str) -> dict[str, Any]:
        a = self._data.get_user_alias(alias)
        if a is None:
            from .objs.errors import NotFoundError

            raise NotFoundError(f"User alias '{alias}' not found.", param="alias")
        return a.model_dump(mode="json")

    def create(self, alias: str, repo: str, filename: str, snapshot: str = "main",
               request_params: dict[str, Any] | None = None,
               context_params: dict[str, Any] | None = None) -> dict[str, Any]:
        a = self._data.parse_alias(dict(alias=alias, repo=repo, filename=filename, snapshot=snapshot,
                                        request_params=request_params or {}, context_params=context_params or {}))
        return self._data.create_user_alias(a).model_dump(mode="json")

    def update(self, alias: str, **fields: Any) -> dict[str, Any]:
        current = self.get(alias)
        current.pop("source", None)
        a = self._data.parse_alias({**current, **fields})
        return self._data.update_user_alias(alias, a).model_dump(mode="json")

    def delete(self, alias: str) -> None:
        self._data.delete_user_alias(alias)


class Bodhi:
    """Every model by name from a notebook: `Bodhi().chat("smollm2:135m", "Hi")`."""

    def __init__(self, home: str | Path | None = None, *, services: AppServices | None = None,
                 **options: Any) -> None:
        self.services = services or AppServices.create(home, **options)
        self._loop = LoopThread.get()
        self.api_models = ApiModels(self)
        self.aliases = Aliases(self)
        # The engine this kernel may start stops when idle and when the kernel exits,
        # as the server extension does for its own.
        self._reaper = self._loop.submit(_reap_idle_forever(self.services.engine))
        atexit.register(self.services.engine.stop, True)

    def __repr__(self) -> str:
        return f"Bodhi(home={str(self.services.home)!r})"

    # -- routing --------------------------------------------------------------------------

    def models(self) -> list[str]:
        """Every model name the gateway serves (API models first, then local)."""
        return [e.id for e in self.services.router.list_models()]

    def route(self, model: str) -> Destination:
        return self.services.router.resolve(model)

    def explain(self, model: str) -> list[Candidate]:
        return self.services.router.explain(model)

    # -- chat -----------------------------------------------------------------------------

    def completion(self, model: str, messages: Messages, *, system: str | None = None, **params: Any) -> dict[str, Any]:
        """The full OpenAI chat.completion response as a dict."""
        body = {**params, "model": model, "messages": _messages(messages, system)}
        return self._loop.run(self.services.gateway.completion(body))

    async def acompletion(self, model: str, messages: Messages, *, system: str | None = None,
                          **params: Any) -> dict[str, Any]:
        body = {**params, "model": model, "messages": _messages(messages, system)}
        return await self._loop.arun(self.services.gateway.completion(body))

    def stream(self, model: str, messages: Messages, *, system: str | None = None,
               **params: Any) -> Iterator[dict[str, Any]]:
        """Raw `chat.completion.chunk` dicts as they arrive."""
        body = {**params, "model": model, "messages": _messages(messages, system)}
        return self._loop.iterate(self._on_loop_chunks(body))

    async def astream(self, model: str, messages: Messages, *, system: str | None = None,
                      **params: Any) -> AsyncIterator[dict[str, Any]]:
        body = {**params, "model": model, "messages": _messages(messages, system)}
        async for chunk in self._loop.aiterate(self._on_loop_chunks(body)):
            yield chunk

    def chat(self, model: str, messages: Messages, stream: bool = False, *, system: str | None = None,
             **params: Any) -> str | Iterator[str]:
        """The reply text, or with `stream=True` an iterator of text deltas."""
        if stream:
            return _texts(self.stream(model, messages, system=system, **params))
        return _reply_text(self.completion(model, messages, system=system, **params))

    async def achat(self, model: str, messages: Messages, stream: bool = False, *, system: str | None = None,
                    **params: Any) -> str | AsyncIterator[str]:
        if stream:
            return _atexts(self.astream(model, messages, system=system, **params))
        return _reply_text(await self.acompletion(model, messages, system=system, **params))

    async def _on_loop_chunks(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        # Created lazily on the private loop so the upstream client belongs to it.
        async for chunk in self.services.gateway.stream_chunks(body):
            yield chunk

    def close(self) -> None:
        self._reaper.cancel()
        self._loop.run(self.services.ai_api.aclose())


async def _reap_idle_forever(engine: Any, every: float = 60.0) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await asyncio.to_thread(engine.reap_idle)
        except Exception:  # a failed check must not end the reaper
            pass


def _reply_text(resp: dict[str, Any]) -> str:
    try:
        return resp["choices"][0]["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""


def _delta(chunk: dict[str, Any]) -> str:
    out = []
    for choice in chunk.get("choices") or []:
        text = (choice.get("delta") or {}).get("content")
        if text:
            out.append(text)
    return "".join(out)


def _texts(chunks: Iterator[dict[str, Any]]) -> Iterator[str]:
    for c in chunks:
        t = _delta(c)
        if t:
            yield t


async def _atexts(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    async for c in chunks:
        t = _delta(c)
        if t:
            yield t
