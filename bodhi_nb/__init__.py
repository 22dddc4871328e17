"""bodhi_nb: one model gateway in Jupyter for remote OpenAI-compatible APIs and local GGUF models.

The public surface is small and imported lazily, so `import bodhi_nb.objs` stays free
of I/O libraries and the server extension does not pull in ipywidgets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Bodhi", "MapResult", "panel", "openai_client", "server_info", "load_ipython_extension",
           "configure_jupyter_ai", "__version__"]

if TYPE_CHECKING:
    from .notebook.batch import MapResult
    from .notebook.client import Bodhi


def __getattr__(name: str) -> Any:
    if name == "Bodhi":
        from .notebook.client import Bodhi

        return Bodhi
    if name == "MapResult":
        from .notebook.batch import MapResult

        return MapResult
    raise AttributeError(f"module 'bodhi_nb' has no attribute {name!r}")


def panel(*args: Any, **kwargs: Any) -> Any:
    """The ipywidgets panels (API models, aliases, chat) in one Tab."""
    from .notebook.widgets import panel as _panel

    return _panel(*args, **kwargs)


def openai_client(*args: Any, **kwargs: Any) -> Any:
    """An `openai.OpenAI` client for the running Jupyter server's gateway."""
    from .notebook.server_info import openai_client as _client

    return _client(*args, **kwargs)


def server_info() -> Any:
    """The running Jupyter server's gateway: `.gateway_url` and `.token` (hidden in reprs)."""
    from .notebook.server_info import find_server

    return find_server()


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext bodhi_nb`: the `%%bodhi` cell magic and `%bodhi` line magic."""
    from .notebook.magics import load_ipython_extension as _load

    _load(ipython)


def configure_jupyter_ai(*args: Any, **kwargs: Any) -> Any:
    """Point jupyter-ai's `%%ai` aliases and chat model at this gateway (no key is stored)."""
    from .notebook.jupyter_ai import configure_jupyter_ai as _configure

    return _configure(*args, **kwargs)


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .extension import BodhiExtension

    return [{"module": "bodhi_nb.extension", "app": BodhiExtension}]
