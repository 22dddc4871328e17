"""The Jupyter server extension's entry point, where jupyter_server and configuration name it
(`bodhi_nb.extension`); the extension itself lives in the HTTP wing, bodhi_nb/http/extension.py."""

from __future__ import annotations

from .http.extension import ROUTES, URL_PREFIX, BodhiExtension

__all__ = ["ROUTES", "URL_PREFIX", "BodhiExtension"]
