"""The ipywidgets panels, over the facade and so over the same operations as the server (never over HTTP)."""

from __future__ import annotations

import ipywidgets as W

from ..client import Bodhi
from .aliases_panel import AliasesPanel
from .api_models_panel import ApiModelsPanel
from .batches_panel import BatchesPanel
from .chat_panel import ChatPanel
from .router_aliases_panel import RouterAliasesPanel
from .usage_panel import UsagePanel

__all__ = ["panel", "ApiModelsPanel", "AliasesPanel", "BatchesPanel", "ChatPanel", "UsagePanel", "RouterAliasesPanel"]


def panel(bodhi: Bodhi | None = None) -> W.Tab:
    """API models, local aliases, chat, usage, router aliases and batch jobs in one Tab."""
    b = bodhi or Bodhi()
    tab = W.Tab(children=[ChatPanel(b), ApiModelsPanel(b), AliasesPanel(b), UsagePanel(b), RouterAliasesPanel(b),
                          BatchesPanel(b)])
    for i, title in enumerate(("Chat", "API models", "Local aliases", "Usage", "Router aliases", "Batches")):
        tab.set_title(i, title)
    return tab
