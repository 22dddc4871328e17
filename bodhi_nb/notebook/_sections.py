"""Private: the facade's management sections: `b.api_models`, `b.aliases`, `b.router_aliases`,
`b.cache`. Each adapts arguments into the contract's request objects and results into dicts;
the rules are the operations' (server_core/operations)."""

from __future__ import annotations

import builtins
from collections.abc import Coroutine
from typing import Any, TypeVar

from ..server_core.operations import Operations
from ._loop_thread import LoopThread

__all__ = ["Aliases", "ApiModels", "Cache", "RouterAliases"]

T = TypeVar("T")


def _given(**fields: Any) -> dict[str, Any]:
    """Only the arguments the caller set (None means "not given", as in the HTTP API)."""
    return {k: v for k, v in fields.items() if v is not None}


class _Section:
    """One part of the facade: its operations, run on bodhi_nb's private I/O loop."""

    def __init__(self, ops: Operations, loop: LoopThread) -> None:
        self._ops = ops
        self._loop = loop

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run(coro)

    async def _arun(self, coro: Coroutine[Any, Any, T]) -> T:
        return await self._loop.arun(coro)


class ApiModels(_Section):
    """Remote providers: create, get, list, update, delete, test, fetch_models."""

    def __repr__(self) -> str:
        return f"<ApiModels {self._run(self._ops.api_models.list(1, 1)).total} registered>"

    def create(self, id: str, base_url: str, api_key: str | None = None, models: builtins.list[str] | None = None,
               prefix: str | None = None, forward_all_with_prefix: bool = False,
               api_format: str = "openai") -> dict[str, Any]:
        """Register a provider. `api_format`: "openai" (chat completions), "openai_responses",
        "anthropic" or "gemini"; every model name works the same on every surface whatever it is."""
        req = _given(id=id, base_url=base_url, api_key=api_key, models=models, prefix=prefix,
                     forward_all_with_prefix=forward_all_with_prefix, api_format=api_format)
        return self._run(self._ops.api_models.create(req)).model_dump(mode="json")

    def get(self, id: str) -> dict[str, Any]:
        return self._run(self._ops.api_models.get(id)).model_dump(mode="json")

    def list(self, page: int = 1, page_size: int = 100) -> builtins.list[dict[str, Any]]:
        return [r.model_dump(mode="json") for r in self._run(self._ops.api_models.list(page, page_size)).data]

    def update(self, id: str, *, api_key: str | None = None, **changes: Any) -> dict[str, Any]:
        """Change fields; leave `api_key` out to keep the stored key (`prefix=None` clears it)."""
        req = {**changes, **_given(api_key=api_key)}
        return self._run(self._ops.api_models.update(id, req)).model_dump(mode="json")

    def delete(self, id: str) -> None:
        self._run(self._ops.api_models.delete(id))

    def test(self, model: str, prompt: str = "Say hello", *, id: str | None = None, base_url: str | None = None,
             api_key: str | None = None, api_format: str | None = None) -> dict[str, Any]:
        """Send a short prompt (at most 30 characters); failures come back as success=False."""
        req = _given(model=model, prompt=prompt, id=id, base_url=base_url, api_key=api_key, api_format=api_format)
        return self._run(self._ops.api_models.test(req)).model_dump(mode="json")

    async def atest(self, model: str, prompt: str = "Say hello", *, id: str | None = None,
                    base_url: str | None = None, api_key: str | None = None,
                    api_format: str | None = None) -> dict[str, Any]:
        req = _given(model=model, prompt=prompt, id=id, base_url=base_url, api_key=api_key, api_format=api_format)
        return (await self._arun(self._ops.api_models.test(req))).model_dump(mode="json")

    def fetch_models(self, id: str | None = None, *, base_url: str | None = None,
                     api_key: str | None = None, api_format: str | None = None) -> builtins.list[str]:
        req = _given(id=id, base_url=base_url, api_key=api_key, api_format=api_format)
        return self._run(self._ops.api_models.fetch_models(req)).models

    async def afetch_models(self, id: str | None = None, *, base_url: str | None = None,
                            api_key: str | None = None, api_format: str | None = None) -> builtins.list[str]:
        req = _given(id=id, base_url=base_url, api_key=api_key, api_format=api_format)
        return (await self._arun(self._ops.api_models.fetch_models(req))).models


class Aliases(_Section):
    """Local user aliases (YAML files) and discovered models."""

    def __repr__(self) -> str:
        return f"<Aliases {len(self.list())} user aliases>"

    def list(self) -> builtins.list[dict[str, Any]]:
        return [a.model_dump(mode="json") for a in self._run(self._ops.aliases.list()).data]

    def unreadable(self) -> builtins.list[dict[str, str]]:
        """Alias files that could not be read, with why (they never hide the others)."""
        return [e.model_dump() for e in self._run(self._ops.aliases.list()).errors]

    def models(self) -> builtins.list[dict[str, Any]]:
        """Discovered GGUF models (Hugging Face cache and the bundled one)."""
        return self._run(self._ops.aliases.models())

    def get(self, alias: str) -> dict[str, Any]:
        return self._run(self._ops.aliases.get(alias)).model_dump(mode="json")

    def create(self, alias: str, repo: str, filename: str, snapshot: str = "main",
               request_params: dict[str, Any] | None = None,
               context_params: dict[str, Any] | None = None) -> dict[str, Any]:
        req = dict(alias=alias, repo=repo, filename=filename, snapshot=snapshot,
                   request_params=request_params or {}, context_params=context_params or {})
        return self._run(self._ops.aliases.create(req)).model_dump(mode="json")

    def update(self, alias: str, **fields: Any) -> dict[str, Any]:
        """Change the given fields; the others keep their values."""
        return self._run(self._ops.aliases.update(alias, fields)).model_dump(mode="json")

    def delete(self, alias: str) -> None:
        self._run(self._ops.aliases.delete(alias))

    def pull(self, ref: str, *, revision: str = "main", progress: Any = None, show: bool = True,
             cancel: Any = None) -> dict[str, Any]:
        """Download a GGUF (`owner/repo[:QUANT|/file.gguf]`) into the HF cache with a progress bar.

        Returns `{"model", "repo", "filename", "path"}`; `model` is the name it is served under.
        `progress(done_bytes, total_bytes)` is called as bytes arrive; `cancel` (a
        `services.hub.CancelFlag`) stops it from another thread. An interrupted pull
        (cancel, Ctrl-C, a restarted kernel) resumes where it stopped when pulled again.
        """
        return self._ops.pull.pull(ref, revision, progress=progress, show=show, cancel=cancel)


class Cache(_Section):
    """The response cache shared with the server and other kernels of this BODHI_HOME."""

    def __repr__(self) -> str:
        return f"<Cache {self.stats().get('entries', 0)} entries>"

    def stats(self) -> dict[str, Any]:
        """Entries and bytes stored (all processes), the bound, and this kernel's hits and misses."""
        return self._run(self._ops.cache.stats())

    def clear(self) -> int:
        """Remove every entry; returns how many there were."""
        return self._run(self._ops.cache.clear())


class RouterAliases(_Section):
    """Router aliases: one name over ordered fallback targets (`b.chat("my-router", ...)`)."""

    def __repr__(self) -> str:
        return f"<RouterAliases {len(self.list())} defined>"

    def create(self, alias: str, targets: list[str], *, cooldown_seconds: float | None = None,
               max_attempts: int | None = None, honor_retry_after: bool | None = None) -> dict[str, Any]:
        """Targets are model names tried in order; a 429, 5xx or unreachable target is skipped for its
        Retry-After (or `cooldown_seconds`, default 60); `max_attempts` defaults to every target."""
        req = _given(alias=alias, targets=targets, cooldown_seconds=cooldown_seconds, max_attempts=max_attempts,
                     honor_retry_after=honor_retry_after)
        return self._run(self._ops.router_aliases.create(req)).model_dump(mode="json")

    def list(self) -> list[dict[str, Any]]:
        """Every router alias, with each target's state (ready, cooling, unknown) in this kernel."""
        return [r.model_dump(mode="json") for r in self._run(self._ops.router_aliases.list()).data]

    def get(self, alias: str) -> dict[str, Any]:
        return self._run(self._ops.router_aliases.get(alias)).model_dump(mode="json")

    def update(self, alias: str, **changes: Any) -> dict[str, Any]:
        """Change the given fields (targets, cooldown_seconds, max_attempts, honor_retry_after)."""
        return self._run(self._ops.router_aliases.update(alias, changes)).model_dump(mode="json")

    def delete(self, alias: str) -> None:
        self._run(self._ops.router_aliases.delete(alias))
