"""bodhi_nb: one model gateway in Jupyter for remote OpenAI-compatible APIs and local GGUF models."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
