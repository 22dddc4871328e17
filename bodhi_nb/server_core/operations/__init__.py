"""The operations layer: the one place where rules live (docs/ARCHITECTURE.md).

Every surface (HTTP handlers, the `Bodhi` facade, the widgets, the CLI and the magic)
parses its input into the contract's request objects, calls an operation here, and
presents the result. Validation, error mapping (one status per error on every
surface), update semantics, not-found handling and limits are decided here or below,
never in an adapter. Every operation is a coroutine that never blocks its event loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...services.batch_store import BatchStore
from ...services.db import ConfigStore
from ...services.files import atomic_write, created_file_mode
from ...services.local_engine import LocalEngine
from ...services.local_models import LocalModels
from ...services.responses_store import ResponsesStore
from ...services.upstream_client import UpstreamClient
from ..gateway import Gateway
from ..model_router import ModelRouter
from ._aliases import AliasOps
from ._api_models import ApiModelOps
from ._batches import DEFAULT_MAX_FILE_BYTES, BatchOps
from ._chat import ChatOps, structured_format
from ._embeddings import DEFAULT_BATCH_SIZE, EmbeddingOps, as_texts
from ._estimate import BATCH_DISCOUNT, DEFAULT_OUTPUT_TOKENS, Estimate, EstimateOps
from ._map import CANCELLED, MapJob, MapOps, MapResult
from ._messages import MessagesOps
from ._models import ModelOps
from ._owners import Owners
from ._pull import CancelFlag, PullOps
from ._responses import ResponsesOps
from ._router_aliases import RouterAliasOps
from ._service import CacheOps, EngineOps, KeyOps
from ._usage import USAGE_ROW_FIELDS, USAGE_SUM_FIELDS, UsageOps, UsagePage, parse_usage_by

__all__ = ["Operations", "ApiModelOps", "AliasOps", "ChatOps", "ModelOps", "PullOps", "UsageOps", "UsagePage", "RouterAliasOps", "structured_format",
           "EmbeddingOps", "DEFAULT_BATCH_SIZE", "as_texts", "MapOps", "MapJob", "MapResult", "CANCELLED",
           "USAGE_ROW_FIELDS", "USAGE_SUM_FIELDS", "parse_usage_by", "CacheOps", "EngineOps", "KeyOps", "CancelFlag", "MessagesOps", "ResponsesOps", "BatchOps", "DEFAULT_MAX_FILE_BYTES", "EstimateOps", "Estimate",
           "DEFAULT_OUTPUT_TOKENS", "BATCH_DISCOUNT",
           # the one atomic, durable file write (services/files.py), for the wings' own files
           "atomic_write", "created_file_mode"]


@dataclass(frozen=True)
class Operations:
    """Every operation of one process, grouped by what it acts on."""

    api_models: ApiModelOps
    aliases: AliasOps
    models: ModelOps
    chat: ChatOps
    usage: UsageOps
    router_aliases: RouterAliasOps
    embeddings: EmbeddingOps
    pull: PullOps
    map: MapOps
    cache: CacheOps
    engine: EngineOps
    keys: KeyOps
    messages: MessagesOps
    responses: ResponsesOps
    batches: BatchOps
    estimate: EstimateOps

    @classmethod
    def create(cls, db: ConfigStore, data: LocalModels, upstream: UpstreamClient, router: ModelRouter,
               gateway: Gateway, engine: LocalEngine, responses: ResponsesStore, batches: BatchStore,
               max_file_bytes: int = DEFAULT_MAX_FILE_BYTES, poll_seconds: float = 30.0,
               per_user: bool = False) -> Operations:
        """`per_user` (the JupyterHub service): files, batches and stored responses are each user's own."""
        owners = Owners(per_user)
        return cls(ApiModelOps(db, upstream), AliasOps(data), ModelOps(router), ChatOps(gateway),
                   UsageOps(gateway.ledger, router.hub), router_aliases=RouterAliasOps(router),
                   embeddings=EmbeddingOps(gateway), pull=PullOps(data), map=MapOps(gateway),
                   cache=CacheOps(gateway.cache), engine=EngineOps(engine), keys=KeyOps(db),
                   messages=MessagesOps(gateway), responses=ResponsesOps(gateway, responses, owners),
                   batches=BatchOps(gateway, batches, max_file_bytes, poll_seconds,
                                    estimate=EstimateOps(router, gateway.ledger, data), owners=owners),
                   estimate=EstimateOps(router, gateway.ledger, data))
