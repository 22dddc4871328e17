"""Point jupyter-ai 3 (its `%%ai` magic and Jupyternaut's chat model) at this gateway.

jupyter-ai 3 reaches models through LiteLLM, so an OpenAI-compatible gateway is the
`openai/<model>` provider with an `api_base`. We write exactly what jupyter-ai documents:

- `AiMagics.initial_aliases` (jupyter-ai-magic-commands) in the IPython profile's
  `ipython_config.json`: `bodhi` and `bodhi/<model>` -> `{"target": "openai/<model>",
  "api_base": <gateway>}`;
- Jupyternaut's `<jupyter data dir>/jupyter_ai/config.json`: `model_provider_id`, its
  `fields[...]["api_base"]`, and one custom model per gateway model.

Only the gateway URL is written, never a key or the Jupyter token: LiteLLM reads
`OPENAI_API_KEY` from the environment when it sends a request, and that variable
holds the Jupyter token (set in this kernel by `configure_jupyter_ai()` when it is
unset, or exported before `jupyter lab` for Jupyternaut in the server process).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..server_core.operations import atomic_write, created_file_mode

__all__ = ["JupyterAiSetup", "configure_jupyter_ai"]

KEY_ENV = "OPENAI_API_KEY"  # what LiteLLM's openai provider reads at request time
_TAG = "(bodhi)"  # marks the Jupyternaut custom models we own, so a re-run replaces them


@dataclass(frozen=True)
class JupyterAiSetup:
    """What was written (paths and aliases) and where the key comes from; holds no secret."""

    gateway_url: str
    aliases: dict[str, dict[str, Any]]
    default_model: str
    ipython_config: Path
    jupyter_ai_config: Path
    key_env: str = KEY_ENV
    notes: list[str] = field(default_factory=list)

    def _repr_markdown_(self) -> str:
        names = ", ".join(f"`{a}`" for a in self.aliases)
        return (f"jupyter-ai now uses the bodhi gateway `{self.gateway_url}`.\n\n"
                f"- `%%ai` aliases: {names} (in `{self.ipython_config}`)\n"
                f"- Jupyternaut chat model: `openai/{self.default_model}` (in `{self.jupyter_ai_config}`)\n"
                f"- key: `${self.key_env}` at run time (the Jupyter token); no key is stored\n"
                + "".join(f"\n{n}" for n in self.notes))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise RuntimeError(f"{path} is not valid JSON ({exc}); fix or remove it, then run this again.") from None
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data, indent=2) + "\n", mode=created_file_mode())  # the one durability rule


def _ipython_profile_dir(ipython_dir: str | Path | None) -> Path:
    if ipython_dir is None:
        from IPython.paths import get_ipython_dir

        ipython_dir = get_ipython_dir()
    return Path(ipython_dir) / "profile_default"


def _jupyter_ai_config_path(data_dir: str | Path | None) -> Path:
    if data_dir is None:
        from jupyter_core.paths import jupyter_data_dir

        data_dir = jupyter_data_dir()
    return Path(data_dir) / "jupyter_ai" / "config.json"


def _gateway_models(info: Any) -> list[str]:
    import httpx

    r = httpx.get(f"{info.gateway_url}/models", headers={"Authorization": f"Bearer {info.token}"},
                  timeout=30, trust_env=False)
    r.raise_for_status()
    return [m["id"] for m in r.json().get("data", [])]


def configure_jupyter_ai(model: str | None = None, models: Iterable[str] | None = None, *, alias: str = "bodhi",
                         gateway_url: str | None = None, ipython_dir: str | Path | None = None,
                         jupyter_data_dir: str | Path | None = None, set_key_env: bool = True) -> JupyterAiSetup:
    """Write jupyter-ai 3's settings so `%%ai bodhi` and Jupyternaut's chat use this gateway.

    `model` is the default (`%%ai bodhi`, Jupyternaut's chat model); `models` get their own
    `bodhi/<name>` aliases and Jupyternaut custom models (default: every name the gateway
    serves). The gateway is the running Jupyter server's unless `gateway_url` is given.
    In this process `OPENAI_API_KEY` is set to the Jupyter token when it is unset.
    """
    from .server_info import find_server

    try:
        info = find_server()
    except RuntimeError:
        if gateway_url is None or models is None:
            raise
        info = None  # everything needed was given; only the key note is skipped
    url = (gateway_url or info.gateway_url).rstrip("/")  # type: ignore[union-attr]
    names = list(models) if models is not None else _gateway_models(info)
    default = model or (names[0] if names else None)
    if not default:
        raise RuntimeError("The gateway serves no model yet; add one, or pass model='name'.")
    if default not in names:
        names.insert(0, default)
    notes: list[str] = []

    aliases = {alias: {"target": f"openai/{default}", "api_base": url, "api_key_name": None}}
    aliases.update({f"{alias}/{n}": {"target": f"openai/{n}", "api_base": url, "api_key_name": None}
                    for n in names})
    profile = _ipython_profile_dir(ipython_dir)
    ipy_path = profile / "ipython_config.json"
    ipy = _read_json(ipy_path)
    section = ipy.setdefault("AiMagics", {})
    kept = {k: v for k, v in (section.get("initial_aliases") or {}).items()
            if not (k == alias or k.startswith(alias + "/"))}
    section["initial_aliases"] = {**kept, **aliases}
    _write_json(ipy_path, ipy)

    jai_path = _jupyter_ai_config_path(jupyter_data_dir)
    jai = _read_json(jai_path)
    jai["model_provider_id"] = f"openai/{default}"
    fields = jai.setdefault("fields", {})
    for n in names:
        fields[f"openai/{n}"] = {**(fields.get(f"openai/{n}") or {}), "api_base": url}
    custom = [m for m in jai.get("custom_models") or [] if _TAG not in str(m.get("name", ""))]
    custom += [{"id": f"custom-{uuid.uuid4()}/openai/{n}", "name": f"{n} {_TAG}", "description": f"via {url}",
                "model_id": f"openai/{n}", "params": {"api_base": url}} for n in names]
    jai["custom_models"] = custom
    _write_json(jai_path, jai)

    _apply_live(aliases)
    if set_key_env and info is not None:
        current = os.environ.get(KEY_ENV)
        if not current and info.token:
            os.environ[KEY_ENV] = info.token  # this process only; nothing is written
            notes.append(f"`{KEY_ENV}` is set to the Jupyter token in this kernel.")
        elif current and current != info.token:
            notes.append(f"`{KEY_ENV}` already holds another key here; `%%ai {alias}` needs it to be the "
                         "Jupyter token (the gateway refuses other keys).")
    return JupyterAiSetup(url, aliases, default, ipy_path, jai_path, notes=notes)


def _apply_live(aliases: dict[str, dict[str, Any]]) -> None:
    """In a running IPython, make the aliases usable now (the file applies to new kernels)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    cfg = shell.config.AiMagics
    cfg.initial_aliases = {**dict(cfg.get("initial_aliases", {}) or {}), **aliases}
    for magics in shell.magics_manager.registry.values():
        if type(magics).__name__ == "AiMagics" and isinstance(getattr(magics, "aliases", None), dict):
            magics.aliases.update(aliases)
