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
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

__all__ = ["SURFACES", "current_surface", "kernel_identity", "set_surface", "using_surface"]

SURFACES = ("http", "python", "widget", "map", "magic")

_surface: ContextVar[str] = ContextVar("bodhi_nb_surface", default="python")


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
