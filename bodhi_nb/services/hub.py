"""HubService: pull a GGUF file from the Hugging Face Hub into its cache, with progress.

`huggingface_hub` does the transfer, so the file lands in the same cache layout
LocalModels discovers (`models--owner--repo/snapshots/<commit>/<file>`) and `HF_ENDPOINT`
/ `HF_TOKEN` are honoured. The transfer runs in a child process (`_hub_worker`) that
keeps its partial file and is stopped with SIGKILL, so an interrupted pull (Stop, a
cancelled job, Ctrl-C, a killed kernel) resumes with a Range request where it stopped.
The child starts with the HF_* settings of the moment (huggingface_hub reads them once,
at import) and none of bodhi's secrets.

A reference is `owner/repo` (the repo's only GGUF), `owner/repo:QUANT` (the GGUF whose
quant matches, as LocalModels names it) or `owner/repo/path/file.gguf`. A quant that
matches nothing, or more than one file, is refused with the repo's choices in the
message. Pulls are blocking calls; the server runs each as a job on its own thread.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..objs.errors import BodhiError, InvalidRequestError, NotFoundError, PullCancelled, UpstreamError
from ._child_env import child_env
from ._hub_errors import error_from, hub_error
from .local_models import quant_of

__all__ = ["CancelFlag", "HubService", "ProgressFn", "PullJob", "PullRef", "choose_file"]

ProgressFn = Callable[[int, "int | None"], None]
JobStatus = Literal["running", "done", "error", "cancelled"]

_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}$")
_MAX_JOBS = 100  # finished jobs kept for GET; the oldest finished ones are dropped first
# The child imports this very package (sys.argv[1] is its root), whatever the working directory.
_WORKER = [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
           "from bodhi_nb.services._hub_worker import main; sys.exit(main())", str(Path(__file__).resolve().parents[2])]
# What the child may inherit: the HF_* and locale settings, paths, proxies and CA bundles; no other secrets.
# What a transfer needs besides Python's basics: certificates and proxies, and HF_* (endpoint,
# home, token); services/_child_env.py drops anything else that looks secret.
_PULL_NAMES = ("XDG_CACHE_HOME", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
               "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
_PULL_SECRETS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


class CancelFlag:
    """Stops a pull from any thread: `set()` kills the transfer's process at once, even on a stalled connection."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._kill: Callable[[], None] | None = None

    def set(self) -> None:
        with self._lock:
            self._event.set()
            kill = self._kill
        if kill is not None:
            kill()

    def is_set(self) -> bool:
        return self._event.is_set()

    def _attach(self, kill: Callable[[], None] | None) -> None:
        with self._lock:
            self._kill = kill
            stopped = self._event.is_set()
        if kill is not None and stopped:
            kill()


@dataclass(frozen=True)
class PullRef:
    """What the user asked for: a repo and either a quant or a file (or neither)."""

    repo: str
    quant: str | None = None
    filename: str | None = None

    @classmethod
    def parse(cls, ref: str) -> PullRef:
        ref = (ref or "").strip()
        quant = filename = None
        parts = ref.split("/")
        if len(parts) > 2:
            ref, filename = "/".join(parts[:2]), "/".join(parts[2:])
            if not filename.endswith(".gguf"):
                raise InvalidRequestError(f"'{filename}' is not a .gguf file; give owner/repo/file.gguf.",
                                          param="model")
        elif ":" in ref:
            ref, quant = ref.rsplit(":", 1)
            if not quant:
                raise InvalidRequestError("The quant after ':' is empty; e.g. owner/repo:Q4_K_M.", param="model")
        if not _REPO_RE.match(ref):
            raise InvalidRequestError(f"'{ref}' is not a Hugging Face repo id; use owner/repo[:QUANT] or "
                                      "owner/repo/file.gguf.", param="model")
        return cls(ref, quant, filename)


def _choices(ggufs: list[str]) -> str:
    return ", ".join(f"{quant_of(Path(f).name)} ({f})" for f in ggufs) or "none"


def choose_file(ref: PullRef, files: list[str]) -> str:
    """The one GGUF in the repo listing `files` that `ref` names; a 4xx listing the choices otherwise."""
    ggufs = sorted(f for f in files if f.endswith(".gguf"))
    if not ggufs:
        raise NotFoundError(f"{ref.repo} holds no .gguf file.", param="model", code="no_gguf")
    if ref.filename is not None:
        if ref.filename in ggufs:
            return ref.filename
        raise NotFoundError(f"{ref.repo} has no file '{ref.filename}'. Choose one of: {_choices(ggufs)}.",
                            param="model", code="file_not_found")
    if ref.quant is None:
        if len(ggufs) == 1:
            return ggufs[0]
        raise InvalidRequestError(f"{ref.repo} holds {len(ggufs)} GGUF files; name one with :QUANT or /file. "
                                  f"Choices: {_choices(ggufs)}.", param="model", code="ambiguous_quant")
    matches = [f for f in ggufs if quant_of(Path(f).name).upper() == ref.quant.upper()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise NotFoundError(f"{ref.repo} has no GGUF with quant '{ref.quant}'. Choose one of: {_choices(ggufs)}.",
                            param="model", code="quant_not_found")
    raise InvalidRequestError(f"Quant '{ref.quant}' matches {len(matches)} files in {ref.repo}; name one: "
                              f"{', '.join(ref.repo + '/' + m for m in matches)}.", param="model",
                              code="ambiguous_quant")


@dataclass
class PullJob:
    """One pull's state, read by `GET modelfiles/pull/{id}` while its thread updates it."""

    id: str
    ref: str
    repo: str
    filename: str
    model: str  # the name it is served under once done (owner/repo:QUANT)
    status: JobStatus = "running"
    downloaded: int = 0
    total: int | None = None
    error: dict[str, Any] | None = None
    path: str | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    _cancel: CancelFlag = field(default_factory=CancelFlag, repr=False)

    def cancel(self) -> None:
        self._cancel.set()

    def progress(self, done: int, total: int | None) -> None:
        self.downloaded, self.total = done, total if total is not None else self.total
        if self._cancel.is_set():
            raise PullCancelled(f"Pull of {self.repo}/{self.filename} cancelled; pull it again to resume.")

    def public(self) -> dict[str, Any]:
        frac = (self.downloaded / self.total) if self.total else (1.0 if self.status == "done" else 0.0)
        return {"id": self.id, "ref": self.ref, "repo": self.repo, "filename": self.filename, "model": self.model,
                "status": self.status, "downloaded_bytes": self.downloaded, "total_bytes": self.total,
                "progress": round(min(frac, 1.0), 4), "error": self.error, "started_at": self.started_at,
                "finished_at": self.finished_at}


class HubService:
    """List a repo's GGUF files, download one into the HF cache, and run pulls as jobs."""

    def __init__(self, hub_dir: Path | Callable[[], Path], on_pulled: Callable[[], None] | None = None) -> None:
        self._hub_dir = hub_dir
        self._on_pulled = on_pulled  # e.g. drop a discovery cache, so the new name is served at once
        self._jobs: dict[str, PullJob] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_data(cls, data: Any) -> HubService:
        """Pull into the cache `data` (a LocalModels) discovers, and drop its discovery cache if it keeps one."""
        return cls(lambda: data.hub_dir, on_pulled=getattr(data, "invalidate", None))

    @property
    def hub_dir(self) -> Path:
        return self._hub_dir() if callable(self._hub_dir) else self._hub_dir

    @staticmethod
    def _endpoint() -> str | None:
        return os.environ.get("HF_ENDPOINT") or None

    @staticmethod
    def _token() -> str | None:
        return os.environ.get("HF_TOKEN") or None

    # -- blocking steps (call from a thread, never from an event loop) ------------------------

    def list_files(self, repo: str, revision: str = "main") -> list[str]:
        from huggingface_hub import HfApi

        try:
            info = HfApi(endpoint=self._endpoint(), token=self._token()).model_info(repo, revision=revision)
        except Exception as exc:  # noqa: BLE001 - every hub failure becomes one readable BodhiError
            raise hub_error(exc, repo) from None
        return [s.rfilename for s in info.siblings or []]

    def resolve(self, ref: str, revision: str = "main") -> tuple[PullRef, str]:
        """Parse `ref` and pick its file from the repo listing (4xx errors name the choices)."""
        pref = PullRef.parse(ref)
        return pref, choose_file(pref, self.list_files(pref.repo, revision))

    def download(self, repo: str, filename: str, revision: str = "main", *, progress: ProgressFn | None = None,
                 show: bool = False, cancel: CancelFlag | None = None) -> Path:
        """Fetch one file into the HF cache (a no-op when it is there) and return its path.

        `progress(done, total)` sees the bytes in the file, the resumed ones first. Stopping the
        pull (`cancel.set()`, a `progress` that raises, Ctrl-C) kills the child at once; the
        partial file stays and the next call resumes it.
        """
        from ._hub_worker import cached

        cache_dir = self.hub_dir.absolute()
        path = cached(repo, filename, revision, cache_dir)  # already pulled: no child process needed
        if path is not None:
            if self._on_pulled is not None:
                self._on_pulled()
            return path
        stop = cancel if cancel is not None else CancelFlag()
        req = {"repo": repo, "filename": filename, "revision": revision, "cache_dir": str(cache_dir)}
        done, bar = 0, None
        result: Path | None = None
        failure: dict[str, Any] | None = None
        with tempfile.TemporaryFile() as errors:
            proc = subprocess.Popen(_WORKER, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
                                    env=_child_env(), text=True, encoding="utf-8", start_new_session=True)
            stop._attach(lambda: _kill(proc))
            try:
                assert proc.stdin is not None and proc.stdout is not None
                try:
                    proc.stdin.write(json.dumps(req) + "\n")
                    proc.stdin.flush()
                except OSError:
                    pass  # the child is gone; its stderr says why, below
                for line in proc.stdout:
                    msg = json.loads(line)
                    if "done" in msg:
                        done, total = int(msg["done"]), msg["total"]
                        bar = _draw(bar, filename, done, total) if show else None
                        if progress is not None:
                            progress(done, total)  # may raise (e.g. PullCancelled): the child is killed below
                    elif "path" in msg:
                        result = Path(msg["path"])
                    elif "error" in msg:
                        failure = msg
            finally:
                stop._attach(None)
                _kill(proc)
                code = proc.wait()
                for pipe in (proc.stdin, proc.stdout):
                    if pipe is not None:
                        try:
                            pipe.close()
                        except OSError:
                            pass
                if bar is not None:
                    bar.close()
            if result is None and stop.is_set():  # a stop that came after the last byte changes nothing
                raise PullCancelled(f"Pull of {repo}/{filename} stopped at {done / 1e6:,.1f} MB; pull it again "
                                    "to resume.")
            if failure is not None:
                raise error_from(failure)
            if result is None:
                errors.seek(0)
                tail = errors.read().decode("utf-8", "replace").strip().splitlines()[-1:]
                raise UpstreamError(f"The download of {repo}/{filename} stopped (exit {code})"
                                    + (f": {tail[0]}" if tail else "."))
        if self._on_pulled is not None:
            self._on_pulled()
        return result

    def pull(self, ref: str, revision: str = "main", *, progress: ProgressFn | None = None,
             show: bool = False, cancel: CancelFlag | None = None) -> dict[str, Any]:
        """Resolve and download in one blocking call: `{"model", "repo", "filename", "path"}`."""
        pref, filename = self.resolve(ref, revision)
        path = self.download(pref.repo, filename, revision, progress=progress, show=show, cancel=cancel)
        return {"model": _served_name(pref.repo, filename), "repo": pref.repo, "filename": filename,
                "path": str(path)}

    # -- jobs -------------------------------------------------------------------------------------

    def start(self, pref: PullRef, filename: str, revision: str = "main") -> PullJob:
        """Start downloading an already-resolved file on a new thread; returns at once."""
        job = PullJob(uuid.uuid4().hex[:12], _ref_text(pref), pref.repo, filename, _served_name(pref.repo, filename))

        def run() -> None:
            try:
                job.path = str(self.download(job.repo, job.filename, revision, progress=job.progress,
                                             cancel=job._cancel))
                job.status = "done"
                if job.total is None or job.downloaded < job.total:  # already cached: nothing was transferred
                    size = Path(job.path).stat().st_size
                    job.downloaded, job.total = size, size
            except PullCancelled as exc:
                job.status, job.error = "cancelled", exc.to_envelope()["error"]
            except BodhiError as exc:
                job.status, job.error = "error", exc.to_envelope()["error"]
            except Exception as exc:  # noqa: BLE001 - reported in the job, never lost in a thread
                job.status = "error"
                job.error = UpstreamError(f"Pull failed: {type(exc).__name__}: {exc}").to_envelope()["error"]
            finally:
                job.finished_at = time.time()

        with self._lock:
            self._jobs[job.id] = job
            self._trim()
        threading.Thread(target=run, name=f"bodhi-pull-{job.id}", daemon=True).start()
        return job

    def job(self, job_id: str) -> PullJob:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"No pull job '{job_id}'.", param="id")
        return job

    def jobs(self) -> list[PullJob]:
        with self._lock:
            return list(self._jobs.values())

    def _trim(self) -> None:
        finished = [j for j in self._jobs.values() if j.status != "running"]
        for j in sorted(finished, key=lambda j: j.started_at)[: max(0, len(self._jobs) - _MAX_JOBS)]:
            del self._jobs[j.id]


def _ref_text(pref: PullRef) -> str:
    if pref.filename:
        return f"{pref.repo}/{pref.filename}"
    return f"{pref.repo}:{pref.quant}" if pref.quant else pref.repo


def _served_name(repo: str, filename: str) -> str:
    return f"{repo}:{quant_of(Path(filename).name)}"


def _child_env() -> dict[str, str]:
    """The transfer process's environment: HF_* (endpoint, token, home), paths and proxies; no bodhi secrets."""
    env = child_env(_PULL_NAMES, ("HF_",), allow=_PULL_SECRETS)
    env["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # the parent draws the bar from the child's reports
    return env


def _kill(proc: subprocess.Popen[str]) -> None:
    """SIGKILL: the child gets no chance to clean up, so its partial file stays for the next pull."""
    if proc.poll() is None:
        try:
            proc.kill()
        except OSError:
            pass


def _draw(bar: Any, filename: str, done: int, total: int | None) -> Any:
    """A tqdm bar (terminal or notebook) that follows the child's byte counts."""
    if bar is None:
        from tqdm.auto import tqdm  # type: ignore[import-untyped, unused-ignore]

        bar = tqdm(total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=Path(filename).name)
    bar.update(done - bar.n)
    return bar
