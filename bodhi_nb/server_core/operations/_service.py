"""Operations on the process's own machinery: the response cache, the local engine and the
store's master key. The facade (`b.cache`), the CLI (`chat`, `rotate-key`) and the magic reach
them here, never the services directly. File and process work runs in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ...services.cache import ResponseCache
from ...services.db import ConfigStore
from ...services.local_engine import LocalEngine

__all__ = ["CacheOps", "EngineOps", "KeyOps"]


class CacheOps:
    """The response cache shared by the server and every kernel of this BODHI_HOME."""

    def __init__(self, cache: ResponseCache | None) -> None:
        self._cache = cache

    async def stats(self) -> dict[str, Any]:
        """Entries and bytes stored (all processes), the bound, and this process's hits and misses."""
        return await asyncio.to_thread(self._cache.stats) if self._cache is not None else {}

    async def clear(self) -> int:
        """Remove every entry; how many there were."""
        return await asyncio.to_thread(self._cache.clear) if self._cache is not None else 0


class EngineOps:
    """The llama.cpp engine shared by every process of this BODHI_HOME."""

    def __init__(self, engine: LocalEngine) -> None:
        self._engine = engine

    async def status(self) -> dict[str, Any] | None:
        """engine.json without its key, plus whether the process is alive (None: no engine)."""
        return await asyncio.to_thread(self._engine.status)

    async def stop(self, *, only_if_owner: bool = False) -> bool:
        """Stop the engine (`only_if_owner`: only one this process started); True when one stopped."""
        return await asyncio.to_thread(self._engine.stop, only_if_owner)


class KeyOps:
    """The store's master key."""

    def __init__(self, db: ConfigStore) -> None:
        self._db = db

    async def rotate(self, new_secret: str | None = None, *, announce: Callable[[str], None] | None = None) -> str:
        """Re-encrypt every key under a new master secret, crash-safely (docs/ARCHITECTURE.md,
        "The store"); `announce` receives a new env secret that only the user can store. Returns
        the one-line outcome."""
        result = await asyncio.to_thread(self._db.rotate_master_key, new_secret, announce=announce)
        return result.message()
