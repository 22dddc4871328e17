"""Which surface made a request, and which kernel and notebook it came from.

The surface travels in a context variable, so a caller sets it once around its work
(`with using_surface("widget"): ...`) and the gateway reads it when it records the
row; asyncio copies context into tasks and into `run_coroutine_threadsafe`, so the
value follows the request onto bodhi_nb's private I/O loop.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HUB_SERVER_HEADER", "HubUser", "ORIGIN_HEADERS", "SURFACES", "current_hub_user", "current_origin",
           "current_surface", "kernel_identity", "origin_headers", "set_http_origin", "set_hub_user", "set_surface",
           "using_surface"]

SURFACES = ("http", "python", "widget", "map", "magic", "batch")

_surface: ContextVar[str] = ContextVar("bodhi_nb_surface", default="python")
_origin: ContextVar[tuple[str | None, str | None]] = ContextVar("bodhi_nb_origin", default=(None, None))


@dataclass(frozen=True)
class HubUser:
    """Who made a request through the JupyterHub service: the hub's own authenticated user (name
    and groups as the hub said), and the user's server name as that server labelled it."""

    name: str
    groups: tuple[str, ...] = ()
    server: str | None = None


_hub_user: ContextVar[HubUser | None] = ContextVar("bodhi_nb_hub_user", default=None)
# Sent by a user's server forwarding to the hub service: which of the user's servers asked (a label).
HUB_SERVER_HEADER = "x-bodhi-hub-server"

# Headers a kernel's OpenAI client sends so the server's row names the kernel and notebook.
ORIGIN_HEADERS = ("x-bodhi-kernel-id", "x-bodhi-notebook")
_MAX_LABEL = 500


def current_surface() -> str:
    return _surface.get()


def set_surface(name: str) -> None:
    """Set the surface for the rest of the current context (e.g. inside a task)."""
    if name not in SURFACES:
        raise ValueError(f"surface must be one of {', '.join(SURFACES)}")
    _surface.set(name)


@contextmanager
def using_surface(name: str) -> Iterator[None]:
    """Record requests made inside this block as coming from `name`."""
    if name not in SURFACES:
        raise ValueError(f"surface must be one of {', '.join(SURFACES)}")
    token = _surface.set(name)
    try:
        yield
    finally:
        _surface.reset(token)


@functools.lru_cache(maxsize=1)
def kernel_identity() -> tuple[str | None, str | None]:
    """(kernel id, notebook path) when this process is a Jupyter kernel, else (None, None).

    The kernel id comes from the kernel's connection file name (`kernel-<id>.json`); the
    notebook path from `JPY_SESSION_NAME`, which jupyter_server sets for kernels it starts.
    """
    kernel_id = None
    app_mod = sys.modules.get("ipykernel.kernelapp")
    if app_mod is not None:
        try:
            app = app_mod.IPKernelApp.instance() if app_mod.IPKernelApp.initialized() else None
            name = Path(app.connection_file).name if app is not None else ""
            if name.startswith("kernel-") and name.endswith(".json"):
                kernel_id = name[len("kernel-"):-len(".json")]
        except Exception:  # noqa: BLE001 - identity is a nicety, never a failure
            kernel_id = None
    return kernel_id, os.environ.get("JPY_SESSION_NAME") or None


def origin_headers() -> dict[str, str]:
    """This kernel's id and notebook as request headers (empty outside a kernel)."""
    return {h: v for h, v in zip(ORIGIN_HEADERS, kernel_identity(), strict=True) if v}


def _label(value: str | None) -> str | None:
    return value[:_MAX_LABEL] if value else None


def set_http_origin(headers: Mapping[str, str]) -> None:
    """For an HTTP request's own context: its rows say "http", with the kernel and notebook
    its client named (labels only, as the authenticated user sent them)."""
    _surface.set("http")
    _origin.set((_label(headers.get(ORIGIN_HEADERS[0])), _label(headers.get(ORIGIN_HEADERS[1]))))


def current_origin() -> tuple[str | None, str | None]:
    """(kernel id, notebook) of the current request: this kernel's own, or what an HTTP client said."""
    if _surface.get() == "http":
        return _origin.get()
    return kernel_identity()


def set_hub_user(user: HubUser | None) -> None:
    """For a request's own context: the JupyterHub user it is accounted and budgeted to."""
    _hub_user.set(user)


def current_hub_user() -> HubUser | None:
    """The JupyterHub user of the current request (None outside the hub service)."""
    return _hub_user.get()
