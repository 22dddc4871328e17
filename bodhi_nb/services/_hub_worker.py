"""Private: the child process that downloads one file into the Hugging Face cache, resumably.

Why a child, and why our own partial file: huggingface_hub (2.x) downloads into a
`<etag>.<random>.incomplete` file that it deletes when the transfer fails or is
interrupted, so it resumes only a connection dropped within one call. Here the bytes
go to `blobs/<etag>.incomplete` (the name the Hub's cache tools report as an
interrupted download), opened for append and never deleted on failure; the next pull
sends `Range: bytes=<its size>-` through huggingface_hub's own `http_get`. The parent
stops a pull with SIGKILL, so nothing runs that could discard the partial file, and a
pull stalled on a dead connection stops at once. Once the blob is whole,
`hf_hub_download` links it into `snapshots/<commit>/` exactly as it would its own.

Protocol: the parent writes one JSON line to stdin (repo, filename, revision,
cache_dir) and keeps stdin open; end of stdin (the parent died) ends this process.
Every stdout line is JSON: `{"done", "total"}` after bytes reach the file (so the
partial file always holds at least what was reported), then `{"path"}` or
`{"error", "status", "kind"}` (`_hub_errors.py`, which both sides share). See
docs/ARCHITECTURE.md (Notebook surface).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from ..objs.errors import BodhiError, UpstreamError
from ._hub_errors import error_line, hub_error

Emit = Callable[..., None]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _emit(**msg: Any) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


class _Reporting:
    """The file object `http_get` writes to: each chunk is flushed to the OS, then reported."""

    def __init__(self, f: BinaryIO, total: int | None, emit: Emit) -> None:
        self._f, self._total, self._emit = f, total, emit

    def write(self, data: bytes) -> int:
        n = self._f.write(data)
        self._f.flush()  # survives a SIGKILL from here on
        self._emit(done=self._f.tell(), total=self._total)
        return n

    def tell(self) -> int:
        return self._f.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def truncate(self, size: int | None = None) -> int:  # the server ignored Range: start over
        n = self._f.truncate(size)
        self._emit(done=self._f.tell(), total=self._total)
        return n


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _transfer(url: str, headers: dict[str, str], size: int | None, etag: str, blob: Path, lock: Path,
              emit: Emit) -> None:
    """Append the missing bytes to `blob`.incomplete, then move it to `blob` (under a lock per file)."""
    from filelock import FileLock
    from huggingface_hub.file_download import http_get

    partial = blob.with_name(blob.name + ".incomplete")
    blob.parent.mkdir(parents=True, exist_ok=True)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock)):  # a second pull of the same file waits, then finds the blob
        if blob.exists():
            return
        start = partial.stat().st_size if partial.exists() else 0
        if size is not None and start > size:  # not a prefix of this file: start over
            partial.unlink()
            start = 0
        emit(done=start, total=size)
        with partial.open("ab") as raw:
            http_get(url, _Reporting(raw, size, emit), resume_size=start, headers=headers,  # type: ignore[arg-type]
                     expected_size=size)
        if start and _SHA256.match(etag) and _sha256(partial) != etag:  # joined bytes from two transfers
            partial.unlink()
            raise UpstreamError(f"The resumed download of {blob.name} did not match its checksum and was "
                                "discarded; pull again to download it afresh.", code="checksum_mismatch")
        os.replace(partial, blob)


def _head(repo: str, filename: str, revision: str, retry: bool = True) -> tuple[str, Any]:
    """The file's resolve URL and its Hub metadata; None when the HEAD failed or lacks a commit or an
    etag (then `hf_hub_download` raises the Hub's error, or finds a copy cached earlier)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    endpoint = os.environ.get("HF_ENDPOINT") or None
    url = hf_hub_url(repo, filename, revision=revision, endpoint=endpoint)
    try:
        meta = get_hf_file_metadata(url, token=os.environ.get("HF_TOKEN") or None, endpoint=endpoint,
                                    retry_on_errors=retry)
    except Exception:  # noqa: BLE001 - see the docstring
        return url, None
    return url, (meta if meta.commit_hash and meta.etag else None)


def _places(cache_dir: Path, repo: str, filename: str, meta: Any) -> tuple[Path, Path]:
    """Where huggingface_hub keeps this file: its snapshot path and its blob."""
    from huggingface_hub.file_download import repo_folder_name

    storage = cache_dir / repo_folder_name(repo_id=repo, repo_type="model")
    return storage / "snapshots" / meta.commit_hash / filename, storage / "blobs" / meta.etag


def cached(repo: str, filename: str, revision: str, cache_dir: Path) -> Path | None:
    """The snapshot path when `revision` of the file is in the cache already (one HEAD, no transfer).

    The parent asks this first, so pulling a model it has costs no child process."""
    _, meta = _head(repo, filename, revision, retry=False)  # on trouble the child retries, and says why
    if meta is None:
        return None
    pointer, _ = _places(cache_dir, repo, filename, meta)
    return pointer if pointer.exists() else None


def fetch(repo: str, filename: str, revision: str, cache_dir: Path, emit: Emit) -> Path:
    """Download `repo/filename` at `revision` into `cache_dir` (resuming a partial file) and return its path."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

    url, meta = _head(repo, filename, revision)
    if meta is not None:
        pointer, blob = _places(cache_dir, repo, filename, meta)
        if not pointer.exists() and not blob.exists():
            headers = build_hf_headers(token=os.environ.get("HF_TOKEN") or None)
            headers["Accept-Encoding"] = "identity"  # byte offsets must be offsets in the file
            target = url
            if meta.xet_file_data is None and meta.location and meta.location != url:
                target = meta.location  # the exact content the HEAD named (e.g. a signed CDN URL)
                if urlsplit(target).netloc != urlsplit(url).netloc:
                    headers.pop("authorization", None)  # never send the Hub token to another host
            lock = cache_dir / ".locks" / blob.parent.parent.name / f"{meta.etag}.resume.lock"
            _transfer(target, headers, meta.size, meta.etag, blob, lock, emit)
    # Links the blob placed above into snapshots/ and refs/ (no transfer), or raises the Hub's error.
    return Path(hf_hub_download(repo, filename, revision=revision, cache_dir=cache_dir,
                                endpoint=os.environ.get("HF_ENDPOINT") or None,
                                token=os.environ.get("HF_TOKEN") or None))


def _exit_with_parent() -> None:
    """End at once when stdin closes: the parent died or stopped the pull (the partial file stays)."""
    sys.stdin.read()
    os._exit(3)


def main() -> int:
    req = json.loads(sys.stdin.readline() or "{}")
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    repo, filename = req["repo"], req["filename"]
    try:
        path = fetch(repo, filename, req.get("revision") or "main", Path(req["cache_dir"]), _emit)
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the parent as one error line
        err = exc if isinstance(exc, BodhiError) else hub_error(exc, repo, filename)
        _emit(**error_line(err))
        return 1
    _emit(path=str(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
