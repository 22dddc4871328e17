"""The Jupyter server extension `bodhi_nb`: config, services, the route table.

Routes live under `{base_url}bodhi/v1/`. Services are created once here and shared
by every handler through `settings`; `stop_extension` closes them.
"""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from jupyter_server.extension.application import ExtensionApp
from tornado import web
from traitlets import Bool, Float, Int, List, Unicode

from ..objs.errors import NotFoundError
from ..objs.urls import ANTHROPIC_PREFIX, API_PREFIX
from ..server_core.app_services import PBKDF2_ITERATIONS, AppServices
from ._base import ROUTES_KEY, SERVICES_KEY, BodhiHandler
from .aliases import AliasesHandler, AliasHandler
from .api_models import ApiModelHandler, ApiModelsHandler, FetchModelsHandler, TestPromptHandler
from .batches import BatchCancelHandler, BatchesHandler, BatchHandler
from .chat import ChatCompletionsHandler
from .embeddings import EmbeddingsHandler
from .files import FileContentHandler, FileHandler, FilesHandler
from .messages import CountTokensHandler, MessagesHandler
from .modelfiles import ModelfilesPullHandler, ModelfilesPullJobHandler
from .models import ModelHandler, ModelsHandler
from .openapi import OpenApiHandler
from .responses import ResponseHandler, ResponseInputItemsHandler, ResponsesHandler
from .router_aliases import RouterAliasesHandler, RouterAliasHandler
from .usage import BudgetHandler, BudgetsHandler, NamedBudgetHandler, PriceHandler, PricesHandler, UsageHandler

__all__ = ["BodhiExtension", "ROUTES", "URL_PREFIX"]

URL_PREFIX = API_PREFIX

# Order matters: literal paths before the `{id}` patterns that would also match them.
ROUTES: list[type[BodhiHandler]] = [
    ChatCompletionsHandler, EmbeddingsHandler, ModelsHandler, ModelHandler,
    TestPromptHandler, FetchModelsHandler, ApiModelsHandler, ApiModelHandler,
    AliasesHandler, AliasHandler, ModelfilesPullHandler, ModelfilesPullJobHandler, OpenApiHandler,
    UsageHandler, PricesHandler, PriceHandler, BudgetHandler, BudgetsHandler, NamedBudgetHandler,
    RouterAliasesHandler, RouterAliasHandler,
    ResponsesHandler, ResponseInputItemsHandler, ResponseHandler, CountTokensHandler, MessagesHandler,
    FilesHandler, FileContentHandler, FileHandler, BatchesHandler, BatchCancelHandler, BatchHandler,
]
# Anthropic's SDK appends /v1/messages to its base_url: the same handlers, also under bodhi/anthropic/v1/.
ANTHROPIC_ROUTES: list[type[BodhiHandler]] = [CountTokensHandler, MessagesHandler]


class UnknownRouteHandler(BodhiHandler):
    """Any other path under bodhi/v1/: a 404 in the OpenAI envelope, after the same
    authentication as every route. Registered after ROUTES, and not part of it, so it is
    never documented as a route."""

    path = r".*"

    @web.authenticated
    @authorized
    async def _unknown(self, *_: str) -> None:
        raise NotFoundError("There is no bodhi_nb route at this path; GET bodhi/v1/openapi.json lists them.",
                            code="unknown_route")

    get = post = put = patch = delete = _unknown


class BodhiExtension(ExtensionApp):
    name = "bodhi_nb"
    description = "One gateway to remote OpenAI-compatible providers and local GGUF models."

    bodhi_home = Unicode(None, allow_none=True, config=True,
                         help="Where the store, aliases and engine state live (default: $BODHI_HOME or "
                              "<jupyter data dir>/bodhi_nb).")
    request_timeout = Float(600.0, config=True, help="Seconds a non-streamed upstream request may take.")
    connect_timeout = Float(10.0, config=True, help="Seconds to connect to an upstream.")
    first_byte_timeout = Float(120.0, config=True, help="Seconds a streamed upstream may take to start answering.")
    engine_idle_timeout = Float(900.0, config=True, help="Stop the local engine after this many idle seconds.")
    engine_start_timeout = Float(120.0, config=True, help="Seconds the local engine may take to become ready.")
    n_threads = Int(0, config=True, help="llama.cpp threads (0: number of cores).")
    response_cache = Bool(False, config=True,
                          help="Answer repeated non-streamed chat requests from the response cache "
                               "($BODHI_HOME/cache.sqlite) and store new ones.")
    response_cache_max_mb = Int(512, config=True, help="Size bound of the response cache (LRU eviction); stored in "
                                                      "the cache file, so kernels evict by it too.")
    usage_ledger = Bool(True, config=True,
                        help="Record one row per request in $BODHI_HOME/usage.sqlite (turn off only to measure "
                             "what recording costs).")
    log_content = Bool(False, config=True,
                       help="Also store each request's messages and reply in the usage ledger (off: tokens, "
                            "timings and costs only).")
    usage_retention_days = Float(90.0, config=True, help="Delete usage rows older than this many days (0: keep all); "
                                                         "stored in the ledger, so kernels prune by it too.")
    daily_budget_usd = Float(None, allow_none=True, config=True,
                             help="Daily spending limit in USD (UTC day) over priced models; above it they answer "
                                  "429 budget_exceeded. A budget set with Bodhi().budget() applies too (the "
                                  "stricter wins). Stored in the ledger: every kernel enforces it too.")
    max_file_mb = Int(200, config=True, help="The largest file bodhi/v1/files accepts, in MB (a larger one is a 413).")
    batch_poll_seconds = Float(30.0, config=True,
                               help="Seconds between polls of a batch running at a provider (OpenAI Batch, "
                                    "Anthropic Message Batches).")
    hub_service = Bool(False, config=True,
                       help="Serve as the JupyterHub service (set by `bodhi-nb hub-service`): API models may not reach "
                            "loopback, link-local, private or metadata addresses unless allowed_addresses names them, "
                            "and rows and budgets are per hub user.")
    allowed_addresses = List(Unicode(), config=True,
                             help="In the hub service: addresses API models may reach although they are loopback, "
                                  "link-local, private or metadata ones: CIDRs, IPs (with :port to allow one port) "
                                  "or host names.")
    kdf_iterations = Int(None, allow_none=True, config=True,
                         help=f"PBKDF2 iterations for a new store's master key (default {PBKDF2_ITERATIONS:,}; an "
                              "existing store keeps its own). Change only for tests.")

    services: AppServices | None = None

    def initialize_settings(self) -> None:
        self.services = AppServices.create(
            self.bodhi_home or None, kdf_iterations=self.kdf_iterations, timeout=self.request_timeout,
            connect_timeout=self.connect_timeout, first_byte_timeout=self.first_byte_timeout,
            engine_idle_timeout=self.engine_idle_timeout, engine_start_timeout=self.engine_start_timeout,
            n_threads=self.n_threads or None, response_cache=self.response_cache,
            cache_max_bytes=self.response_cache_max_mb * 1024 * 1024, usage_ledger=self.usage_ledger,
            log_content=self.log_content, usage_retention_days=self.usage_retention_days,
            daily_budget_usd=self.daily_budget_usd, server=True, max_file_bytes=self.max_file_mb * 1024 * 1024,
            batch_poll_seconds=self.batch_poll_seconds, hub_service=self.hub_service,
            allowed_addresses=tuple(self.allowed_addresses))
        self.settings[SERVICES_KEY] = self.services
        self.settings[ROUTES_KEY] = ROUTES
        self.log.info("bodhi_nb gateway at %s%s (store %s)", self.serverapp.base_url if self.serverapp else "/",
                      URL_PREFIX, self.services.home)

    def initialize_handlers(self) -> None:
        self.handlers.extend((URL_PREFIX + h.path, h) for h in ROUTES)
        self.handlers.extend((ANTHROPIC_PREFIX + h.path, h) for h in ANTHROPIC_ROUTES)
        self.handlers.append((URL_PREFIX + UnknownRouteHandler.path, UnknownRouteHandler))  # always last

    async def _start_jupyter_server_extension(self, serverapp: object) -> None:
        """Once the loop runs: go on with every unfinished batch no live process runs (a restart)."""
        if self.services is not None:
            n = await self.services.ops.batches.resume()
            if n:
                self.log.info("bodhi_nb: resumed %d unfinished batch job(s)", n)

    async def stop_extension(self) -> None:
        if self.services is not None:
            await self.services.aclose()
