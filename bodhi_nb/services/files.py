"""Atomic file writes: the one durability rule for every file bodhi_nb replaces.

The store, the master-key file, `engine.json` and the user alias files are read by other
processes at any moment, and a writer may be killed (or the machine lose power) half way.
So none of them is ever rewritten in place. `atomic_write` is the only way they are written:

1. a uniquely named temp file in the same directory (`tempfile.mkstemp`: two writers never
   share a temp file, a stray file or directory of a fixed name cannot get in the way, and
   the rename below stays on one file system),
2. its mode set, the data written, flushed and fsynced,
3. `os.replace` over the target (readers see the old file or the new one, never a mix),
4. the directory fsynced (`fsync_dir`), so the rename itself survives a power cut.

If anything fails before the rename, the temp file is removed and the target is untouched;
the error (an `OSError`) goes to the caller, which words it for its user.

The steps call `tempfile.mkstemp`, `os.fsync` and `os.replace` through their modules, so the
fault-injection tests (tests/unit/services/test_rotation.py) can make any one of them fail.
"""

from __future__ import annotations

import contextlib
import locale
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "created_file_mode", "fsync_dir"]

# Characters of the target's name kept in the temp file's name: the temp name
# (".<name>.<8 random>.tmp") then stays far below NAME_MAX (255 bytes) for any target.
_NAME_IN_TEMP = 48


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (best effort: some filesystems cannot fsync a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def created_file_mode() -> int:
    """The mode `open()` gives a new file: 0o666 less this process's umask.

    For files a person edits by hand (alias files), which have always had the umask's mode.
    """
    return 0o666 & ~_umask()


def _umask() -> int:
    try:  # Linux: read it without changing it
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # Elsewhere the umask can only be read by setting it. Set a strict one meanwhile, so a
    # file another thread creates in that instant is private rather than open to all.
    old = os.umask(0o077)
    os.umask(old)
    return old


def atomic_write(path: Path, data: bytes | str, *, mode: int = 0o600,
                 sync_dir: Callable[[Path], None] = fsync_dir) -> None:
    """Replace `path` with `data` atomically and durably (the module docstring has the rule).

    `mode` is the new file's permission bits (0o600 unless the caller says otherwise; the
    caller decides whether to keep an existing file's mode). A `str` is encoded the way
    `Path.write_text` would (the locale's encoding, UTF-8 almost everywhere), so
    `Path.read_text` reads it back. `sync_dir` is the directory fsync (`fsync_dir`); a
    caller may pass its own name for it so a test can make that last step fail.

    Raises `OSError` from whichever step failed; before the rename nothing has changed
    and no temp file is left behind.
    """
    raw = data.encode(locale.getpreferredencoding(False)) if isinstance(data, str) else data
    prefix = "." + path.name.lstrip(".")[:_NAME_IN_TEMP] + "."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    sync_dir(path.parent)
