"""Layer 6: ipywidgets panels over the same services as the server (never over HTTP)."""

from __future__ import annotations

import ipywidgets as W

from ..client import Bodhi
from .aliases_panel import AliasesPanel
from .api_models_panel import ApiModelsPanel
from .chat_panel import ChatPanel
from .router_aliases_panel import RouterAliasesPanel
from .usage_panel import UsagePanel

__all__ = ["panel", "ApiModelsPanel", "AliasesPanel", "ChatPanel", "UsagePanel", "RouterAliasesPanel"]


def panel(bodhi: Bodhi | None = None) -> W.Tab:
    """API models, local aliases, chat, usage and router aliases in one Tab."""
    b = bodhi or Bodhi()
    tab = W.Tab(children=[ChatPanel(b), ApiModelsPanel(b), AliasesPanel(b), UsagePanel(b), RouterAliasesPanel(b)])
    for i, title in enumerate(("Chat", "API models", "Local aliases", "Usage", "Router aliases")):
        tab.set_title(i, title)
    return tab
