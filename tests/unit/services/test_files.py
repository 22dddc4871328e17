"""services/files.py: the one atomic write (content, mode, no temp file left, failure leaves the old file)."""

from __future__ import annotations

import os
import stat

import pytest

from bodhi_nb.services import files
from bodhi_nb.services.files import atomic_write, created_file_mode, fsync_dir


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_bytes_and_text_are_written(tmp_path):
    target = tmp_path / "state.json"
    atomic_write(target, b'{"a":1}')
    assert target.read_bytes() == b'{"a":1}'
    atomic_write(target, "über-secret\n")
    assert target.read_text() == "über-secret\n"


def test_mode_is_0600_by_default_and_as_asked(tmp_path):
    target = tmp_path / "key"
    atomic_write(target, "x")
    assert _mode(target) == 0o600
    atomic_write(target, "y", mode=0o640)
    assert _mode(target) == 0o640 and target.read_text() == "y"


def test_created_file_mode_follows_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        assert created_file_mode() == 0o640
        atomic_write(tmp_path / "alias.yaml", "a: 1\n", mode=created_file_mode())
    finally:
        os.umask(old)
    assert _mode(tmp_path / "alias.yaml") == 0o640


def test_no_temp_file_is_left_after_success(tmp_path):
    target = tmp_path / ".secret_key"
    for i in range(3):
        atomic_write(target, f"secret-{i}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".secret_key"]
    assert target.read_text() == "secret-2"


def test_a_stray_file_or_directory_with_the_old_temp_name_does_not_get_in_the_way(tmp_path):
    (tmp_path / "engine.json.tmp").mkdir()
    (tmp_path / ".engine.json.tmp").write_text("junk")
    atomic_write(tmp_path / "engine.json", "{}")
    assert (tmp_path / "engine.json").read_text() == "{}"


def test_a_long_name_keeps_the_temp_name_short(tmp_path, monkeypatch):
    seen = []
    real = files.tempfile.mkstemp

    def spy(*a, **k):
        fd, name = real(*a, **k)
        seen.append(os.path.basename(name))
        return fd, name

    monkeypatch.setattr(files.tempfile, "mkstemp", spy)
    target = tmp_path / ("a" * 250 + ".yaml")
    atomic_write(target, "x")
    assert target.read_text() == "x" and len(seen[0]) < 80 and seen[0].startswith(".aaa")


@pytest.mark.parametrize("step", ["replace", "fsync", "write"])
def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch, step):
    target = tmp_path / "bodhi_nb.db.json"
    atomic_write(target, b"old", mode=0o644)

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    if step == "replace":
        monkeypatch.setattr(files.os, "replace", boom)
    elif step == "fsync":
        monkeypatch.setattr(files.os, "fsync", boom)
    else:
        real_fdopen = os.fdopen

        class HalfWriter:
            def __init__(self, fh):
                self._fh = fh

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self._fh.close()

            def fileno(self):
                return self._fh.fileno()

            def write(self, data):
                self._fh.write(data[:1])  # part of it reaches the temp file, then the disk is full
                boom()

        monkeypatch.setattr(files.os, "fdopen", lambda fd, m: HalfWriter(real_fdopen(fd, m)))
    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, b"new content")
    monkeypatch.undo()
    assert target.read_bytes() == b"old" and _mode(target) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bodhi_nb.db.json"]


def test_a_failed_directory_sync_comes_after_the_rename(tmp_path):
    target = tmp_path / "f"

    def failing_sync(path):
        assert path == tmp_path and target.read_text() == "new"
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError, match="Input/output"):
        atomic_write(target, "new", sync_dir=failing_sync)
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["f"]


def test_fsync_dir_is_best_effort(tmp_path):
    fsync_dir(tmp_path)
    fsync_dir(tmp_path / "missing")  # cannot be opened: nothing to do, no error
