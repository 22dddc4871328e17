"""ConfigStore: the API-model table, its encrypted keys, and the master-key life cycle.

Every write runs under the storage's cross-process lock, re-reading the file first, so
uniqueness checks see what other processes wrote. Lookups go through in-memory maps
(id, prefix, served name) rebuilt only when the file's generation changes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tinydb import TinyDB
from tinydb.table import Document, Table

from ...objs.api_model_alias import STORED, ApiModelAlias, check_api_key, mask_api_key, utc_now
from ...objs.errors import (
    ConflictError,
    DecryptionError,
    InvalidRequestError,
    NotFoundError,
)
from ...objs.paging import page_window
from . import migrations
from ._encryption import RecordCipher
from ._keys import KeyState
from ._rotation import KeyMeta, RotationResult
from .master_key import MasterSecret, load_master_secret
from .storage import LockedJSONStorage

__all__ = ["DB_FILENAME", "ApiModelRecord", "ConfigStore", "KeyNotReady", "RotationResult"]

_List = list  # `ConfigStore.list` shadows the builtin inside the class body

log = logging.getLogger(__name__)

DB_FILENAME = "bodhi_nb.db.json"
TABLE = "api_model_aliases"
_KEY_FIELD = "api_key"


class _StrIdTable(Table):
    """Documents keyed by the api model id itself, so ids never collide across processes."""

    document_id_class = str  # type: ignore[assignment]


class _TinyDB(TinyDB):
    table_class = _StrIdTable


@dataclass(frozen=True)
class ApiModelRecord:
    """An api model plus what may be said about its key (never the key)."""

    alias: ApiModelAlias
    has_api_key: bool
    api_key_masked: str | None
    error: str | None = None
    """Why the stored key cannot be used (then `api_key_masked` is None); None when fine."""

    def public(self) -> dict[str, Any]:
        """The JSON view every surface shows (HTTP, client, widgets): no key, only its mask."""
        return {**self.alias.model_dump(mode="json"), "has_api_key": self.has_api_key,
                "api_key_masked": self.api_key_masked, "error": self.error}


class KeyNotReady(Exception):
    """The key cannot come from memory now (`indexed_api_key` says why): work for a thread."""


@dataclass
class _Index:
    """One snapshot of the file: every read of a call uses the same one (no torn lists)."""

    generation: int = -1
    keys: KeyMeta | None = None
    by_id: dict[str, ApiModelAlias] = field(default_factory=dict)
    enc_keys: dict[str, str | None] = field(default_factory=dict)
    by_prefix: dict[str, str] = field(default_factory=dict)
    by_name: dict[str, list[str]] = field(default_factory=dict)  # newest-updated first
    forward_all: list[str] = field(default_factory=list)  # newest-updated first
    # Keys decrypted from this snapshot, each once (a 100,000-row batch decrypts one, not 100,000).
    plain_keys: dict[str, str | None] = field(default_factory=dict, repr=False)


class ConfigStore:
    """API-model CRUD over the encrypted, multi-process TinyDB file."""

    def __init__(
        self,
        home: Path | str,
        secret: MasterSecret | str | None = None,
        *,
        kdf_iterations: int | None = None,
    ) -> None:
        """`kdf_iterations` None means the store's own count (the default for a new store)."""
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        reloadable = secret is None  # a secret we found ourselves can be found again after a rotation
        if secret is None:
            secret = load_master_secret(self.home)
        elif isinstance(secret, str):
            secret = MasterSecret(secret, "argument")
        self._db = _TinyDB(self.home / DB_FILENAME, storage=LockedJSONStorage)
        self._storage: LockedJSONStorage = self._db.storage  # type: ignore[assignment]
        self._table = self._db.table(TABLE, cache_size=0)
        self._lock = threading.RLock()
        self._index = _Index()
        migrations.migrate(self._storage)
        self._keys = KeyState(self.home, self._storage, secret, reloadable=reloadable, iterations=kdf_iterations)
        self._keys.open()

    def __repr__(self) -> str:
        return f"ConfigStore(home={str(self.home)!r})"

    @property
    def path(self) -> Path:
        return self._storage.path

    @property
    def storage(self) -> LockedJSONStorage:
        """The locked file storage, for the other tables of this file (router aliases)."""
        return self._storage

    @property
    def master_secret(self) -> MasterSecret:
        return self._keys.secret

    @property
    def key_generation(self) -> int:
        """The store's key generation this process holds the key of."""
        return self._keys.generation

    # -- index ----------------------------------------------------------------------------

    def index_is_current(self) -> bool:
        """True when lookups are pure memory: the file has not changed since the index was built."""
        return not self._storage.changed() and self._index.generation == self._storage.generation

    def refresh_index(self) -> None:
        """Reload and re-index a changed file now (from a worker thread, off the event loop)."""
        self._current()

    def _current(self) -> _Index:
        """The in-memory index, rebuilt only when the file changed since the last build."""
        with self._lock:
            gen = self._storage.refresh()
            if gen != self._index.generation:
                self._index = self._build_index(self._storage.snapshot(), gen)
            return self._index

    @staticmethod
    def _build_index(db: dict[str, Any], generation: int) -> _Index:
        idx = _Index(generation=generation, keys=KeyMeta.of(migrations.meta(db)))
        docs = db.get(TABLE, {})
        aliases = []
        for doc in docs.values():
            data = {k: v for k, v in doc.items() if k != _KEY_FIELD}
            a = ApiModelAlias.model_validate(data, context=STORED)
            aliases.append(a)
            idx.by_id[a.id] = a
            idx.enc_keys[a.id] = doc.get(_KEY_FIELD)
            if a.prefix:
                idx.by_prefix[a.prefix] = a.id
        aliases.sort(key=lambda a: a.updated_at, reverse=True)
        for a in aliases:
            for name in a.served_names():
                idx.by_name.setdefault(name, []).append(a.id)
            if a.forward_all_with_prefix:
                idx.forward_all.append(a.id)
        return idx

    def _cipher(self, idx: _Index) -> RecordCipher:
        """The key for this snapshot's generation (reloaded after a rotation, or refused)."""
        assert idx.keys is not None
        return self._keys.cipher_for(idx.keys)

    # -- reads ----------------------------------------------------------------------------

    def get(self, id: str) -> ApiModelAlias:
        return self._get(self._current(), id)

    @staticmethod
    def _get(idx: _Index, id: str) -> ApiModelAlias:
        a = idx.by_id.get(id)
        if a is None:
            raise NotFoundError(f"API model '{id}' not found.", param="id")
        return a

    def record(self, id: str) -> ApiModelRecord:
        idx = self._current()
        return self._record(idx, self._cipher(idx), self._get(idx, id))

    def _record(self, idx: _Index, cipher: RecordCipher, a: ApiModelAlias) -> ApiModelRecord:
        token = idx.enc_keys.get(a.id)
        if token is None:
            return ApiModelRecord(a, False, None)
        try:
            key = self._decrypt(cipher, token, a.id)
        except DecryptionError as exc:
            return ApiModelRecord(a, True, None, exc.message)
        return ApiModelRecord(a, True, mask_api_key(key))

    def list(self, page: int = 1, page_size: int = 30) -> tuple[list[ApiModelRecord], int]:
        """One page, newest created first, and the total count, all from one snapshot."""
        limit, start = page_window(page, page_size)
        idx = self._current()
        cipher = self._cipher(idx)
        items = sorted(idx.by_id.values(), key=lambda a: a.created_at, reverse=True)
        return [self._record(idx, cipher, a) for a in items[start:start + limit]], len(items)

    def all(self) -> _List[ApiModelAlias]:
        """Every api model, most recently updated first."""
        return sorted(self._current().by_id.values(), key=lambda a: a.updated_at, reverse=True)

    def find_by_served_name(self, name: str) -> _List[ApiModelAlias]:
        """API models listing `name` (prefix included), most recently updated first."""
        idx = self._current()
        return [idx.by_id[i] for i in idx.by_name.get(name, ())]

    def forward_all_aliases(self) -> _List[ApiModelAlias]:
        """API models that forward any name under their prefix, most recently updated first."""
        idx = self._current()
        return [idx.by_id[i] for i in idx.forward_all]

    def indexed_api_key(self, alias: ApiModelAlias) -> str | None:
        """The decrypted key of `alias` from memory, without looking at the file: for an event
        loop that resolved `alias` from this store's index for this request (server_core/gateway.py).
        Decrypted once per snapshot. `KeyNotReady` when memory cannot answer: the index has moved
        on since `alias` was resolved (another snapshot's key must not go to its base URL), or
        decrypting would first reload the secret and derive its key (~0.3 s, right after another
        process rotated the master key). Then call `get_api_key` from a thread."""
        idx = self._index
        if idx.by_id.get(alias.id) is not alias:
            raise KeyNotReady(alias.id)
        if alias.id in idx.plain_keys:
            return idx.plain_keys[alias.id]
        if idx.keys is None or not self._keys.is_ready(idx.keys):
            raise KeyNotReady(alias.id)
        return self._key_of(idx, alias.id)

    def get_api_key(self, id: str) -> str | None:
        """The decrypted key (for the upstream Authorization header only)."""
        return self._key_of(self._current(), id)

    def _key_of(self, idx: _Index, id: str) -> str | None:
        """`id`'s key in snapshot `idx`, decrypted the first time it is asked for."""
        self._get(idx, id)
        if id not in idx.plain_keys:
            token = idx.enc_keys.get(id)
            idx.plain_keys[id] = None if token is None else self._decrypt(self._cipher(idx), token, id)
        return idx.plain_keys[id]

    @staticmethod
    def _decrypt(cipher: RecordCipher, token: str, id: str) -> str:
        try:
            return cipher.decrypt(token, id, _KEY_FIELD)
        except DecryptionError as exc:
            raise DecryptionError(
                f"The stored API key of API model '{id}' cannot be decrypted ({_reason(exc.message)}); "
                f"set a new api_key on '{id}' or delete it."
            ) from None

    # -- writes ---------------------------------------------------------------------------

    def create(self, alias: ApiModelAlias, api_key: str | None) -> ApiModelRecord:
        with self._storage.transaction():
            idx = self._current()
            cipher = self._cipher(idx)  # refuses a stale key before anything is written
            if alias.id in idx.by_id:
                raise ConflictError(f"An API model with id '{alias.id}' already exists.", param="id")
            self._check_prefix_free(idx, alias.prefix, alias.id)
            now = utc_now()
            alias = alias.model_copy(update={"created_at": now, "updated_at": now})
            self._table.insert(Document(self._to_doc(cipher, alias, api_key), doc_id=alias.id))  # type: ignore[arg-type]
            return self.record(alias.id)

    def update(self, id: str, changes: dict[str, Any], api_key: str | None = None) -> ApiModelRecord:
        """Apply `changes` (validated as a whole); a None `api_key` keeps the stored one.

        A stored key is never sent to a new host: moving `base_url` to another origin
        (scheme, host, port) needs the api_key again.
        """
        changes = {k: v for k, v in changes.items() if k not in ("id", "created_at", "updated_at")}
        with self._storage.transaction():
            idx = self._current()
            cipher = self._cipher(idx)
            old = self._get(idx, id)
            merged = {**old.model_dump(), **changes, "updated_at": utc_now()}
            new = ApiModelAlias.model_validate(merged)
            self._check_prefix_free(idx, new.prefix, id)
            if api_key is None and idx.enc_keys.get(id) is not None and _origin(new.base_url) != _origin(old.base_url):
                raise InvalidRequestError(
                    f"base_url moves API model '{id}' to another host ({_origin(new.base_url)}): give its api_key "
                    "again, so the stored key is never sent to a host it was not meant for.",
                    param="api_key", code="api_key_required")
            doc = new.model_dump(mode="json")
            if api_key is not None:
                _check_key(api_key)
                doc[_KEY_FIELD] = cipher.encrypt(api_key, id, _KEY_FIELD)
            self._table.update(doc, doc_ids=[id])  # type: ignore[list-item]
            return self.record(id)

    def delete(self, id: str) -> None:
        with self._storage.transaction():
            idx = self._current()
            self._cipher(idx)  # a stale process writes nothing
            self._get(idx, id)
            self._table.remove(doc_ids=[id])  # type: ignore[list-item]

    def rotate_master_key(
        self, new_secret: str | None = None, *, announce: Callable[[str], None] | None = None
    ) -> RotationResult:
        """Re-encrypt every key under a new master secret, crash-safely.

        The new secret is made durable first (key file or keyring; for an environment
        secret, `announce(new)` hands a generated one to the user, or the caller passes
        the one the user chose), then every key is re-encrypted in one atomic write. A
        kill at any step leaves a store that opens with the persisted secret; see
        docs/ARCHITECTURE.md ("Encryption and rotation").
        """
        with self._lock:
            result = self._keys.rotate(new_secret, announce)
        return result

    def close(self) -> None:
        self._db.close()

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def _check_prefix_free(idx: _Index, prefix: str | None, own_id: str) -> None:
        if prefix and idx.by_prefix.get(prefix, own_id) != own_id:
            raise ConflictError(
                f"The prefix '{prefix}' is already used by API model '{idx.by_prefix[prefix]}'.",
                param="prefix",
            )

    @staticmethod
    def _to_doc(cipher: RecordCipher, alias: ApiModelAlias, api_key: str | None) -> dict[str, Any]:
        doc = alias.model_dump(mode="json")
        if api_key is not None:
            _check_key(api_key)
        doc[_KEY_FIELD] = None if api_key is None else cipher.encrypt(api_key, alias.id, _KEY_FIELD)
        return doc


def _origin(url: str) -> str:
    """scheme://host:port with the scheme's default port filled in, for comparing hosts."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    port = port or {"http": 80, "https": 443}.get(parts.scheme, 0)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


def _reason(message: str) -> str:
    """The cause part of a cipher error, without its own record/field preamble."""
    if "failed authentication: " in message:
        return message.split("failed authentication: ", 1)[1].rstrip(".")
    for phrase in ("unknown format", "not valid base64", "truncated"):
        if phrase in message:
            return phrase
    return message


def _check_key(api_key: str) -> None:
    """The one api-key rule (objs/api_model_alias.py), as the store's 400."""
    try:
        check_api_key(api_key)
    except ValueError as exc:
        raise InvalidRequestError(str(exc), param="api_key") from None
