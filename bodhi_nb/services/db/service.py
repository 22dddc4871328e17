"""DbService: the API-model table, its encrypted keys, and the master-key life cycle.

Every write runs under the storage's cross-process lock, re-reading the file first, so
uniqueness checks see what other processes wrote. Lookups go through in-memory maps
(id, prefix, served name) rebuilt only when the file's generation changes.
"""

from __future__ import annotations

import base64
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.table import Document, Table

from ...objs.api_model_alias import ApiModelAlias, mask_api_key, utc_now
from ...objs.errors import (
    ConflictError,
    DecryptionError,
    InvalidRequestError,
    NotFoundError,
    WrongMasterKeyError,
)
from . import migrations
from ._encryption import PBKDF2_ITERATIONS, RecordCipher, derive_kek, new_salt
from .master_key import MasterSecret, load_master_secret
from .storage import LockedJSONStorage

__all__ = ["DbService", "ApiModelRecord", "DB_FILENAME"]

log = logging.getLogger(__name__)

DB_FILENAME = "bodhi_nb.db.json"
TABLE = "api_model_aliases"
_KEY_FIELD = "api_key"
_KEY_CHECK_PLAINTEXT = "bodhi_nb key check v1"
_KEY_CHECK_ID = "_meta"


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

    def public(self) -> dict[str, Any]:
        """The JSON view every surface shows (HTTP, client, widgets): no key, only its mask."""
        return {**self.alias.model_dump(mode="json"), "has_api_key": self.has_api_key,
                "api_key_masked": self.api_key_masked}


@dataclass
class _Index:
    generation: int = -1
    by_id: dict[str, ApiModelAlias] = field(default_factory=dict)
    enc_keys: dict[str, str | None] = field(default_factory=dict)
    by_prefix: dict[str, str] = field(default_factory=dict)
    by_name: dict[str, list[str]] = field(default_factory=dict)  # newest-updated first
    forward_all: list[str] = field(default_factory=list)  # newest-updated first


class DbService:
    """API-model CRUD over the encrypted, multi-process TinyDB file."""

    def __init__(
        self,
        home: Path | str,
        secret: MasterSecret | str | None = None,
        *,
        kdf_iterations: int = PBKDF2_ITERATIONS,
    ) -> None:
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        if secret is None:
            secret = load_master_secret(self.home)
        elif isinstance(secret, str):
            secret = MasterSecret(secret, "argument")
        self._secret = secret
        self._iterations = kdf_iterations
        self._db = _TinyDB(self.home / DB_FILENAME, storage=LockedJSONStorage)
        self._storage: LockedJSONStorage = self._db.storage  # type: ignore[assignment]
        self._table = self._db.table(TABLE, cache_size=0)
        self._lock = threading.RLock()
        self._index = _Index()
        migrations.migrate(self._storage)
        self._cipher = self._open_cipher()

    def __repr__(self) -> str:
        return f"DbService(home={str(self.home)!r})"

    @property
    def path(self) -> Path:
        return self._storage.path

    @property
    def master_secret(self) -> MasterSecret:
        return self._secret

    # -- opening / key check --------------------------------------------------------------

    def _open_cipher(self) -> RecordCipher:
        with self._storage.transaction():
            db = self._storage.snapshot()
            m = migrations.meta(db)
            cipher = RecordCipher(derive_kek(self._secret.value, base64.b64decode(m["kdf_salt"]), self._iterations))
            check = m.get("key_check")
            if check is None:
                m["key_check"] = cipher.encrypt(_KEY_CHECK_PLAINTEXT, _KEY_CHECK_ID, "key_check")
                m["kdf_iterations"] = self._iterations
                self._storage.write(db)
                return cipher
        self._verify(cipher, check, m)
        return cipher

    def _verify(self, cipher: RecordCipher, check: str, m: dict[str, Any]) -> None:
        stored_iter = m.get("kdf_iterations", PBKDF2_ITERATIONS)
        if stored_iter != self._iterations:
            raise WrongMasterKeyError(
                f"This store was created with {stored_iter} KDF iterations, not {self._iterations}."
            )
        try:
            ok = cipher.decrypt(check, _KEY_CHECK_ID, "key_check") == _KEY_CHECK_PLAINTEXT
        except DecryptionError:
            ok = False
        if not ok:
            raise WrongMasterKeyError(
                f"The master secret (from {self._secret.origin}) does not open {self.path}: it was "
                "created with a different BODHI_ENCRYPTION_KEY / keyring entry / key file."
            )

    # -- index ----------------------------------------------------------------------------

    def _current(self) -> _Index:
        """The in-memory index, rebuilt only when the file changed since the last build."""
        with self._lock:
            gen = self._storage.refresh()
            if gen != self._index.generation:
                self._index = self._build_index(self._storage.snapshot(), gen)
            return self._index

    @staticmethod
    def _build_index(db: dict[str, Any], generation: int) -> _Index:
        idx = _Index(generation=generation)
        docs = db.get(TABLE, {})
        aliases = []
        for doc in docs.values():
            data = {k: v for k, v in doc.items() if k != _KEY_FIELD}
            a = ApiModelAlias.model_validate(data)
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

    # -- reads ----------------------------------------------------------------------------

    def get(self, id: str) -> ApiModelAlias:
        a = self._current().by_id.get(id)
        if a is None:
            raise NotFoundError(f"API model '{id}' not found.", param="id")
        return a

    def record(self, id: str) -> ApiModelRecord:
        a = self.get(id)
        key = self.get_api_key(id)
        return ApiModelRecord(a, key is not None, mask_api_key(key) if key is not None else None)

    def list(self, page: int = 1, page_size: int = 30) -> tuple[list[ApiModelRecord], int]:
        """One page, newest created first, and the total count."""
        if page < 1 or not 1 <= page_size <= 1000:
            raise InvalidRequestError("page must be >= 1 and page_size between 1 and 1000.", param="page")
        items = sorted(self._current().by_id.values(), key=lambda a: a.created_at, reverse=True)
        start = (page - 1) * page_size
        return [self.record(a.id) for a in items[start:start + page_size]], len(items)

    def all(self) -> list[ApiModelAlias]:
        """Every api model, most recently updated first."""
        return sorted(self._current().by_id.values(), key=lambda a: a.updated_at, reverse=True)

    def find_by_served_name(self, name: str) -> list[ApiModelAlias]:
        """API models listing `name` (prefix included), most recently updated first."""
        idx = self._current()
        return [idx.by_id[i] for i in idx.by_name.get(name, ())]

    def forward_all_aliases(self) -> list[ApiModelAlias]:
        """API models that forward any name under their prefix, most recently updated first."""
        idx = self._current()
        return [idx.by_id[i] for i in idx.forward_all]

    def get_api_key(self, id: str) -> str | None:
        """The decrypted key (for the upstream Authorization header only)."""
        idx = self._current()
        if id not in idx.by_id:
            raise NotFoundError(f"API model '{id}' not found.", param="id")
        token = idx.enc_keys.get(id)
        return None if token is None else self._cipher.decrypt(token, id, _KEY_FIELD)

    # -- writes ---------------------------------------------------------------------------

    def create(self, alias: ApiModelAlias, api_key: str | None) -> ApiModelRecord:
        with self._storage.transaction():
            idx = self._current()
            if alias.id in idx.by_id:
                raise ConflictError(f"An API model with id '{alias.id}' already exists.", param="id")
            self._check_prefix_free(idx, alias.prefix, alias.id)
            now = utc_now()
            alias = alias.model_copy(update={"created_at": now, "updated_at": now})
            self._table.insert(Document(self._to_doc(alias, api_key), doc_id=alias.id))  # type: ignore[arg-type]
        return self.record(alias.id)

    def update(self, id: str, changes: dict[str, Any], api_key: str | None = None) -> ApiModelRecord:
        """Apply `changes` (validated as a whole); a None `api_key` keeps the stored one."""
        changes = {k: v for k, v in changes.items() if k not in ("id", "created_at", "updated_at")}
        with self._storage.transaction():
            idx = self._current()
            old = idx.by_id.get(id)
            if old is None:
                raise NotFoundError(f"API model '{id}' not found.", param="id")
            merged = {**old.model_dump(), **changes, "updated_at": utc_now()}
            new = ApiModelAlias.model_validate(merged)
            self._check_prefix_free(idx, new.prefix, id)
            doc = new.model_dump(mode="json")
            if api_key is not None:
                _check_key(api_key)
                doc[_KEY_FIELD] = self._cipher.encrypt(api_key, id, _KEY_FIELD)
            self._table.update(doc, doc_ids=[id])  # type: ignore[list-item]
        return self.record(id)

    def delete(self, id: str) -> None:
        with self._storage.transaction():
            if id not in self._current().by_id:
                raise NotFoundError(f"API model '{id}' not found.", param="id")
            self._table.remove(doc_ids=[id])  # type: ignore[list-item]

    def rotate_master_key(self, new_secret: str) -> None:
        """Re-encrypt every key and the key check under `new_secret`, in one atomic write."""
        if len(new_secret) < 20:
            raise InvalidRequestError("The new master secret must be at least 20 characters long.")
        with self._storage.transaction():
            db = self._storage.snapshot()
            m = migrations.meta(db)
            salt = new_salt()
            new_cipher = RecordCipher(derive_kek(new_secret, salt, self._iterations))
            for id, doc in db.get(TABLE, {}).items():
                token = doc.get(_KEY_FIELD)
                if token is not None:
                    doc[_KEY_FIELD] = new_cipher.encrypt(self._cipher.decrypt(token, id, _KEY_FIELD), id, _KEY_FIELD)
            m["kdf_salt"] = base64.b64encode(salt).decode()
            m["key_check"] = new_cipher.encrypt(_KEY_CHECK_PLAINTEXT, _KEY_CHECK_ID, "key_check")
            self._storage.write(db)
            self._cipher = new_cipher
            self._secret = MasterSecret(new_secret, self._secret.origin)
        log.info("master key rotated for %s", self.path)

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

    def _to_doc(self, alias: ApiModelAlias, api_key: str | None) -> dict[str, Any]:
        doc = alias.model_dump(mode="json")
        if api_key is not None:
            _check_key(api_key)
        doc[_KEY_FIELD] = None if api_key is None else self._cipher.encrypt(api_key, alias.id, _KEY_FIELD)
        return doc


def _check_key(api_key: str) -> None:
    if not api_key or any(c.isspace() for c in api_key) or len(api_key) > 4096:
        # Say what is wrong without echoing the value.
        raise InvalidRequestError(
            "api_key must be a non-empty string without whitespace (at most 4096 characters).",
            param="api_key",
        )
