"""AppServices: the services of one process, built once, in dependency order.

The Jupyter server extension and the in-kernel `Bodhi` facade both build one of these
over the same BODHI_HOME, so they see the same store, aliases and local engine.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from ..services.address_guard import AddressGuard
from ..services.batch_store import BatchStore
from ..services.cache import ResponseCache
from ..services.db import PBKDF2_ITERATIONS, ConfigStore
from ..services.db.master_key import ENV_VAR
from ..services.home import bodhi_home
from ..services.local_engine import LocalEngine
from ..services.local_models import LocalModels
from ..services.responses_store import ResponsesStore
from ..services.upstream_client import UpstreamClient
from ..services.usage import Ledger
from .gateway import Gateway
from .hub_link import HubLink
from .model_router import ModelRouter
from .operations import DEFAULT_MAX_FILE_BYTES, Operations

__all__ = ["AppServices", "PBKDF2_ITERATIONS"]

log = logging.getLogger(__name__)


@dataclass
class AppServices:
    home: Path
    db: ConfigStore
    data: LocalModels
    upstream: UpstreamClient
    engine: LocalEngine
    router: ModelRouter
    gateway: Gateway
    ledger: Ledger | None = None
    batch_options: dict[str, Any] | None = None  # max_file_bytes, poll_seconds, per_user

    @classmethod
    def create(
        cls,
        home: str | Path | None = None,
        *,
        master_secret: str | None = None,
        kdf_iterations: int | None = None,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        first_byte_timeout: float = 120.0,
        engine_idle_timeout: float = 900.0,
        engine_start_timeout: float = 120.0,
        n_threads: int | None = None,
        response_cache: bool = False,
        cache_max_bytes: int | None = None,
        usage_ledger: bool = True,
        log_content: bool = False,
        usage_retention_days: float | None = None,
        daily_budget_usd: float | None = None,
        server: bool = False,
        max_file_bytes: int | None = None,
        batch_poll_seconds: float = 30.0,
        hub_service: bool = False,
        allowed_addresses: tuple[str, ...] = (),
    ) -> AppServices:
        """`cache_max_bytes` and `usage_retention_days` are stored with the data they bound
        (None: follow what is stored); `server=True` (the Jupyter server) also stores
        `daily_budget_usd`, which every process then enforces (docs/ARCHITECTURE.md).

        `hub_service` (`bodhi-nb hub-service`): API models may reach loopback, link-local, private
        and metadata addresses only where `allowed_addresses` names them. Any other process under
        JupyterHub links to the hub's service when there is one (server_core/hub_link.py)."""
        h = bodhi_home(home)
        db = ConfigStore(h, master_secret, kdf_iterations=kdf_iterations)
        data = LocalModels(h)
        engine = LocalEngine(h, data, idle_timeout=engine_idle_timeout, start_timeout=engine_start_timeout,
                             n_threads=n_threads)
        guard = AddressGuard(allowed_addresses, trusted=engine.trusted_addresses) if hub_service else None
        upstream = UpstreamClient(db, timeout=timeout, connect_timeout=connect_timeout,
                                  first_byte_timeout=first_byte_timeout, address_guard=guard)
        hub = None if hub_service else HubLink.from_env()
        if hub is not None:
            hub.upstream = upstream
        router = ModelRouter(db, data, hub=hub)
        # The cache is always available to callers that ask for it (`Bodhi.map`, `chat(cache=True)`);
        # `response_cache` makes it the default for requests that do not say (the HTTP gateway).
        cache = ResponseCache(h / "cache.sqlite", cache_max_bytes)
        # The usage ledger ($BODHI_HOME/usage.sqlite); off only to measure what it costs.
        ledger = Ledger.try_open(h, log_content=log_content, retention_days=usage_retention_days,
                                 daily_budget_usd=daily_budget_usd, server=server) if usage_ledger else None
        gateway = Gateway(router, upstream, engine, cache=cache, cache_by_default=response_cache, ledger=ledger)
        batch = {"max_file_bytes": max_file_bytes or DEFAULT_MAX_FILE_BYTES, "poll_seconds": batch_poll_seconds,
                 "per_user": hub_service}
        return cls(h, db, data, upstream, engine, router, gateway, ledger, batch)

    @classmethod
    def shared(cls, home: str | Path | None, options: dict[str, Any]) -> AppServices:
        """One set of services per BODHI_HOME, options and environment secret in this process.

        Notebooks create `Bodhi()` again and again (re-run cells, `panel()`, `%%bodhi`); each set
        has its ledger and cache writer threads and exit hooks, so they are made once and shared.
        The local engine exits by itself when idle (even if this kernel is killed); one this
        process started also stops when it exits.
        """
        # The environment's master secret is part of what was opened (as a digest, never the value).
        env_secret = hashlib.sha256(os.environ.get(ENV_VAR, "").encode()).hexdigest()
        key = (str(bodhi_home(home)), repr(sorted(options.items())) + env_secret)
        with _SHARED_LOCK:
            services = _SHARED.get(key)
            if services is None:
                services = _SHARED[key] = cls.create(home, **options)
                atexit.register(services.engine.stop, True)
            return services

    @cached_property
    def ops(self) -> Operations:
        """The operations every surface calls (docs/ARCHITECTURE.md)."""
        return Operations.create(self.db, self.data, self.upstream, self.router, self.gateway, self.engine,
                                 ResponsesStore(self.home), BatchStore(self.home), **(self.batch_options or {}))

    async def aclose(self, *, final: bool = True) -> None:
        """The one shutdown. Always: close this loop's upstream client. `final` (the server
        stopping): also stop the local engine and close the ledger; otherwise (one `Bodhi` closed
        while others share these services) flush the ledger, and the engine keeps its idle timer."""
        if "ops" in self.__dict__:  # (built lazily): batch jobs this process runs stop; others take them over
            await self.ops.batches.aclose()
        await self.upstream.aclose()
        if final:
            await asyncio.to_thread(self.engine.stop, True)
        if self.ledger is not None:
            await asyncio.to_thread(self.ledger.close if final else self.ledger.flush)

    def __repr__(self) -> str:
        return f"AppServices(home={str(self.home)!r})"


_SHARED: dict[tuple[str, str], AppServices] = {}
_SHARED_LOCK = threading.Lock()
