"""Where the master secret comes from, in order of preference.

1. `BODHI_ENCRYPTION_KEY` (at least 20 characters): for servers, CI and JupyterHub.
2. The OS keyring, when a real backend exists (not the fail/null/chainer-with-nothing
   backends that headless Linux gives you); one entry per BODHI_HOME.
3. A random key file `$BODHI_HOME/.secret_key`, created with mode 0600.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from ...objs.errors import StoreError

__all__ = ["MasterSecret", "load_master_secret", "store_master_secret", "ENV_VAR", "MIN_LENGTH"]

log = logging.getLogger(__name__)

ENV_VAR = "BODHI_ENCRYPTION_KEY"
MIN_LENGTH = 20
KEYRING_SERVICE = "bodhi_nb"
KEY_FILE = ".secret_key"


@dataclass(frozen=True)
class MasterSecret:
    """The secret plus where it came from (`env`, `keyring` or `file`)."""

    value: str
    origin: str

    def __repr__(self) -> str:
        return f"MasterSecret(origin={self.origin!r}, value=<hidden>)"


def _usable_keyring():  # type: ignore[no-untyped-def]
    if os.environ.get("BODHI_NO_KEYRING"):
        return None
    try:
        import keyring
        from keyring.backends import chainer, fail
    except Exception:  # pragma: no cover - keyring is a dependency
        return None
    kr = keyring.get_keyring()
    if isinstance(kr, fail.Keyring) or type(kr).__module__.startswith("keyring.backends.null"):
        return None
    if isinstance(kr, chainer.ChainerBackend) and not kr.backends:
        return None
    try:
        if kr.priority <= 0:  # type: ignore[operator]
            return None
    except Exception:
        return None
    return kr


def _validate(value: str, origin: str) -> str:
    if len(value) < MIN_LENGTH:
        raise StoreError(f"The master secret from {origin} must be at least {MIN_LENGTH} characters long.")
    return value


def load_master_secret(home: Path) -> MasterSecret:
    """Find the master secret for `home`, creating a key file on first use."""
    env = os.environ.get(ENV_VAR)
    if env:
        return MasterSecret(_validate(env, ENV_VAR), "env")
    kr = _usable_keyring()
    user = str(home.resolve())
    if kr is not None:
        try:
            value = kr.get_password(KEYRING_SERVICE, user)
            if value is None:
                value = _random_secret()
                kr.set_password(KEYRING_SERVICE, user, value)
            return MasterSecret(_validate(value, "the OS keyring"), "keyring")
        except Exception as exc:  # a locked or broken keyring falls back to the file
            log.warning("OS keyring unusable (%s); using the key file instead", type(exc).__name__)
    path = home / KEY_FILE
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first; read theirs
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(_random_secret())
    return MasterSecret(_validate(path.read_text().strip(), str(path)), "file")


def store_master_secret(home: Path, secret: MasterSecret, new_value: str) -> MasterSecret:
    """Persist a rotated secret where the old one came from; env must be changed by the user."""
    _validate(new_value, "the new master secret")
    if secret.origin == "keyring":
        kr = _usable_keyring()
        if kr is None:
            raise StoreError("The OS keyring is no longer available to store the new master secret.")
        kr.set_password(KEYRING_SERVICE, str(home.resolve()), new_value)
    elif secret.origin == "file":
        path = home / KEY_FILE
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(new_value)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    return MasterSecret(new_value, secret.origin)


def _random_secret() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
