"""Private: the environment a child process of bodhi_nb gets (the llama.cpp engine, a pull).

The parent may hold the master secret, provider keys and the Jupyter token in its
environment. A child gets an allow-list of names and prefixes it needs, and even from
those, nothing whose name looks like a secret unless the caller names it on purpose
(a pull needs `HF_TOKEN`) (docs/ARCHITECTURE.md, "Security rules").
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

__all__ = ["child_env"]

# What Python and the C runtime need on every platform.
_BASE = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TMP", "TEMP",
    "LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH", "PYTHONPATH", "PYTHONHOME", "PYTHONIOENCODING", "PYTHONUTF8",
    "VIRTUAL_ENV", "SYSTEMROOT", "SYSTEMDRIVE", "WINDIR", "COMSPEC"})
_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSW", "CREDENTIAL", "AUTH")


def child_env(names: Iterable[str] = (), prefixes: Iterable[str] = (), *, allow: Iterable[str] = (),
              environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The allow-listed part of `environ` (default: this process's): the base names, `names`,
    anything under `LC_` or `prefixes`, minus every name that looks like a secret except
    those in `allow`. Names compare upper-cased (`https_proxy` is `HTTPS_PROXY`)."""
    keep = _BASE | {n.upper() for n in names}
    starts = ("LC_", *(p.upper() for p in prefixes))
    allowed = {n.upper() for n in allow}
    src = os.environ if environ is None else environ
    out = {}
    for k, v in src.items():
        u = k.upper()
        if not (u in keep or u.startswith(starts)):
            continue
        if u not in allowed and any(w in u for w in _SECRET_WORDS):
            continue
        out[k] = v
    return out
