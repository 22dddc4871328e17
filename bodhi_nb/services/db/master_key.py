"""Where the master secret comes from, in order of preference, and where a new one goes.

1. `BODHI_ENCRYPTION_KEY` (at least 20 characters): for servers, CI and JupyterHub.
2. The OS keyring, when a real backend exists (not the fail/null/chainer-with-nothing
   backends that headless Linux gives you); one entry per BODHI_HOME.
3. A random key file `$BODHI_HOME/.secret_key`, created with mode 0600.

Key rotation (see `_rotation`) saves a new secret where the old one came from; for an
environment variable only the user can do that, so the new value is handed to them.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import tempfile  # noqa: F401 - tests/unit/services/test_rotation.py patches master_key.tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...objs.errors import StoreError
from ..files import atomic_write
from ..files import fsync_dir as _fsync_dir

__all__ = [
    "ENV_VAR",
    "MIN_LENGTH",
    "RELOADABLE_ORIGINS",
    "MasterSecret",
    "load_master_secret",
    "persist_master_secret",
    "random_secret",
    "read_persisted_secret",
]

log = logging.getLogger(__name__)

ENV_VAR = "BODHI_ENCRYPTION_KEY"
MIN_LENGTH = 20
KEYRING_SERVICE = "bodhi_nb"
KEY_FILE = ".secret_key"
RELOADABLE_ORIGINS = frozenset({"env", "keyring", "file"})
"""Origins a running process can read again after another process rotated the key."""


@dataclass(frozen=True)
class MasterSecret:
    """The secret plus where it came from (`env`, `keyring`, `file` or `argument`)."""

    value: str
    origin: str

    def __repr__(self) -> str:
        return f"MasterSecret(origin={self.origin!r}, value=<hidden>)"

    def where(self, home: Path) -> str:
        """Where this secret lives, in words a user can act on."""
        return {"env": ENV_VAR, "keyring": "the OS keyring", "file": str(home / KEY_FILE)}.get(
            self.origin, "the master secret given to bodhi_nb")


def _usable_keyring() -> Any:
    if os.environ.get("BODHI_NO_KEYRING"):
        return None
    try:
        import keyring
        from keyring.backends import chainer, fail
    except Exception:  # noqa: BLE001  # pragma: no cover - keyring is a dependency
        return None
    kr = keyring.get_keyring()
    if isinstance(kr, fail.Keyring) or type(kr).__module__.startswith("keyring.backends.null"):
        return None
    if isinstance(kr, chainer.ChainerBackend) and not kr.backends:
        return None
    try:
        if kr.priority <= 0:
            return None
    except Exception:  # noqa: BLE001 - a backend that cannot say its priority is not usable
        return None
    return kr


def _validate(value: str, origin: str) -> str:
    if len(value) < MIN_LENGTH:
        raise StoreError(f"The master secret from {origin} must be at least {MIN_LENGTH} characters long.")
    return value


def load_master_secret(home: Path, *, create: bool = True) -> MasterSecret:
    """Find the master secret for `home`; on first use (`create`) make a random key file.

    `create=False` is for reloading after a rotation: a missing secret is then an error,
    never a silently new one.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        return MasterSecret(_validate(env, ENV_VAR), "env")
    kr = _usable_keyring()
    user = str(home.resolve())
    if kr is not None:
        try:
            value = kr.get_password(KEYRING_SERVICE, user)
            if value is None:
                if not create:
                    raise StoreError("The OS keyring holds no bodhi_nb master secret for this BODHI_HOME.")
                value = random_secret()
                kr.set_password(KEYRING_SERVICE, user, value)
            return MasterSecret(_validate(value, "the OS keyring"), "keyring")
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - a locked or broken keyring falls back to the file
            if not create:
                raise StoreError(f"The OS keyring cannot be read ({type(exc).__name__}); unlock it.") from None
            log.warning("OS keyring unusable (%s); using the key file instead", type(exc).__name__)
    path = home / KEY_FILE
    if not path.exists():
        if not create:
            raise StoreError(f"The key file {path} is missing.")
        home.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first; read theirs
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(random_secret())
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise StoreError(f"Cannot read the key file {path}: {exc.strerror or exc}") from None
    return MasterSecret(_validate(value, str(path)), "file")


def persist_master_secret(home: Path, origin: str, value: str) -> None:
    """Save a rotated secret where the old one came from (key file or keyring).

    The key file is replaced atomically through a uniquely named temp file (fsynced), so
    a kill leaves the old or the new file and a stray temp file cannot get in the way.
    `env` and `argument` secrets are the caller's to keep: nothing is written.
    """
    _validate(value, "the new master secret")
    if origin == "keyring":
        kr = _usable_keyring()
        if kr is None:
            raise StoreError("the OS keyring is no longer available")
        try:
            kr.set_password(KEYRING_SERVICE, str(home.resolve()), value)
        except Exception as exc:  # noqa: BLE001 - keyring backends raise anything; say which
            raise StoreError(f"the OS keyring refused the new master secret ({type(exc).__name__}); "
                             "unlock the keyring") from None
    elif origin == "file":
        _write_key_file(home / KEY_FILE, value)


def _write_key_file(path: Path, value: str) -> None:
    # `_fsync_dir` is passed by its name here so a test can make the step after the rename
    # fail (tests/unit/services/test_rotation.py patches master_key._fsync_dir).
    try:
        atomic_write(path, value, mode=0o600, sync_dir=_fsync_dir)
    except OSError as exc:
        raise StoreError(f"cannot write {path} ({exc.strerror or exc})") from None


def read_persisted_secret(home: Path, origin: str) -> str | None:
    """What the key file or keyring holds now (None when it cannot be told)."""
    try:
        if origin == "keyring":
            kr = _usable_keyring()
            return None if kr is None else kr.get_password(KEYRING_SERVICE, str(home.resolve()))
        if origin == "file":
            return (home / KEY_FILE).read_text().strip()
    except Exception:  # noqa: BLE001 - "cannot tell" is an answer here
        return None
    return None


def random_secret() -> str:
    """A fresh 256-bit secret, URL-safe."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
