"""LocalEngine: one llama.cpp server process (llama-cpp-python's) for local aliases.

Like BodhiApp with llama-server, one model is loaded at a time; asking for another
alias (or the same file with other context_params) restarts it. The engine is shared by
every process using the same BODHI_HOME: its pid, port, alias, mode and key live in
`$BODHI_HOME/engine.json` (mode 0600) under a file lock, so a kernel and the Jupyter
server reuse one process instead of loading the model twice.

Embeddings need the model loaded with embedding=True. The first embeddings request for
an alias reloads its engine in that mode, which then serves chat as well, so the same
name answers both with no further reload (measured in benchmarks/README.md).

The engine is llama_cpp.server's app run by `_engine_main`, which adds an idle timer: it
exits by itself after `idle_timeout` seconds without requests, so a kernel killed with
SIGKILL never leaves it running. It gets an allow-listed environment (no master secret,
provider key or Jupyter token) and a random API key per start, which it requires on every
request; `ensure` hands that key to the gateway in an `EngineEndpoint`.

The work is blocking (process start, health polling), so the async `ensure` runs it in a
worker thread and never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import httpx
from filelock import FileLock

from ..objs.errors import LocalEngineUnavailable
from ..objs.model_alias import DiscoveredModelAlias, UserModelAlias
from ._child_env import child_env
from ._engine_main import HEALTH_PATH, IDLE_EXIT_MESSAGE
from .files import atomic_write
from .local_models import LocalModels

__all__ = [
    "KEEP_LOGS",
    "LOCAL_EXTRA_HINT",
    "EngineEndpoint",
    "EngineState",
    "LocalEngine",
    "Purpose",
    "engine_env",
    "local_extra_available",
]

log = logging.getLogger(__name__)

LOCAL_EXTRA_HINT = "pip install 'bodhi_nb[local]'"
ENGINE_MODULE = "bodhi_nb.services._engine_main"
_LEGACY_MODULE = "llama_cpp.server"
KEEP_LOGS = 20  # engine logs kept in $BODHI_HOME/logs; older ones are deleted at each start

Purpose = Literal["chat", "embeddings"]

# What llama.cpp needs besides Python's basics (services/_child_env.py drops anything secret).
_ENGINE_NAMES = ("LLAMA_CPP_LIB_PATH",)
_ENGINE_PREFIXES = ("OPENBLAS_", "OMP_", "GOMP_", "KMP_", "MKL_", "GGML_", "CUDA_", "HIP_", "ROCR_")


def local_extra_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("uvicorn") is not None


def engine_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The engine's environment: an allow-list, minus any name that looks like a secret."""
    return child_env(_ENGINE_NAMES, _ENGINE_PREFIXES, environ=environ)


@dataclass(frozen=True)
class EngineEndpoint:
    """Where to send one local request: the engine's OpenAI base URL and its per-start key.

    `{base_url}/chat/completions` and, for an endpoint from `ensure(alias, "embeddings")`,
    `{base_url}/embeddings` (OpenAI shape, one mean-pooled vector per input) both need
    `Authorization: Bearer {api_key}`.
    """

    base_url: str
    api_key: str = field(repr=False)


@dataclass
class EngineState:
    """What engine.json (0600) records about the running engine."""

    pid: int
    port: int
    alias: str
    config: str  # hash of model path + alias + context params + embedding mode
    model_path: str
    args: list[str]
    log_file: str
    started_at: float
    owner_pid: int
    embedding: bool = False
    idle_timeout: float = 900.0  # the engine's own, set by whoever started it
    api_key: str = field(default="", repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def endpoint(self) -> EngineEndpoint:
        return EngineEndpoint(self.base_url, self.api_key)


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (an exited child nobody has waited for yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS): the signal check is all there is
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _is_our_engine(st: EngineState, module: str = ENGINE_MODULE) -> bool:
    """The pid still runs *our* engine (pids are reused; never signal a stranger)."""
    try:
        cmdline = Path(f"/proc/{st.pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS): trust the recorded pid
        return _alive(st.pid)
    return module.encode() in cmdline and str(st.port).encode() in cmdline and _alive(st.pid)


def _is_legacy_engine(st: EngineState) -> bool:
    """A bare `python -m llama_cpp.server` started by an older bodhi_nb: no idle timer, no key.
    Never reused, but stopped like ours, or it would run forever."""
    return _is_our_engine(st, _LEGACY_MODULE)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


class LocalEngine:
    """Starts, reuses, switches and stops the llama.cpp server for local aliases."""

    def __init__(
        self,
        home: Path | str,
        data: LocalModels,
        *,
        idle_timeout: float = 900.0,
        start_timeout: float = 120.0,
        n_threads: int | None = None,
        python: str = sys.executable,
    ) -> None:
        self.home = Path(home)
        self.data = data
        self.idle_timeout = idle_timeout
        self.start_timeout = start_timeout
        self.n_threads = n_threads or int(os.environ.get("BODHI_NB_THREADS", "0")) or os.cpu_count() or 2
        self.python = python
        self.state_file = self.home / "engine.json"
        self.logs_dir = self.home / "logs"
        self._file_lock = FileLock(str(self.state_file) + ".lock", timeout=self.start_timeout + 60, thread_local=False)
        self._mutex = threading.Lock()
        self._known: EngineState | None = None
        self._checked_at = 0.0  # monotonic time of our last health check of `_known`
        self._last_crash: str | None = None

    # -- public ---------------------------------------------------------------------------

    async def ensure(self, alias: UserModelAlias | DiscoveredModelAlias, purpose: Purpose = "chat") -> EngineEndpoint:
        """An engine serving `alias` for `purpose`, started or switched if needed.

        Without a health check the known engine is trusted only for half its idle timeout
        after our last one: that check was a request, so the engine cannot have idled out.
        """
        known = self._known
        # The quick check still reads /proc and the GGUF's path on disk: in a worker thread,
        # like the rest (a local request spends far longer in llama.cpp than in the hop).
        if known is not None and time.monotonic() - self._checked_at < known.idle_timeout / 2 and \
                await asyncio.to_thread(self._still_serves, known, alias, purpose):
            return known.endpoint
        return await asyncio.to_thread(self.ensure_sync, alias, purpose)

    def _still_serves(self, known: EngineState, alias: UserModelAlias | DiscoveredModelAlias,
                      purpose: Purpose) -> bool:
        return self._serves(known, alias, purpose) and _is_our_engine(known)

    def trusted_addresses(self) -> list[tuple[str, int]]:
        """Where this process's engine listens, for the hub service's address rule: the gateway's own
        llama.cpp on 127.0.0.1 is reachable though loopback is refused to API models."""
        known = self._known
        return [("127.0.0.1", known.port)] if known is not None else []

    def ensure_sync(self, alias: UserModelAlias | DiscoveredModelAlias, purpose: Purpose = "chat") -> EngineEndpoint:
        if not local_extra_available():
            raise LocalEngineUnavailable(
                f"'{alias.alias}' is a local model, but llama-cpp-python is not installed. Install it with: {LOCAL_EXTRA_HINT}")
        with self._mutex, self._file_lock:
            st = self._read_state()
            if st is not None and self._serves(st, alias, purpose) and _is_our_engine(st) and self._healthy(st, 2.0):
                self._known, self._checked_at = st, time.monotonic()
                return st.endpoint
            embedding = self._embedding_mode(st, alias, purpose)
            config, model_path, args = self._config(alias, embedding)
            if st is not None:
                if st.config == config and not _is_our_engine(st):
                    tail = _tail(Path(st.log_file), 8)
                    if IDLE_EXIT_MESSAGE not in tail:
                        self._last_crash = tail or "the process exited"
                        log.warning("local engine for %s had died; restarting", st.alias)
                self._stop_state(st)
            st = self._start(alias, config, model_path, args, embedding)
            self._write_state(st)
            self._known, self._checked_at = st, time.monotonic()
            self._last_crash = None
            return st.endpoint

    def status(self) -> dict[str, Any] | None:
        """engine.json without the key, plus whether the process is alive."""
        st = self._read_state()
        if st is None:
            return None
        info = {k: v for k, v in asdict(st).items() if k != "api_key"}
        return {**info, "alive": _is_our_engine(st), "base_url": st.base_url}

    def stop(self, only_if_owner: bool = False) -> bool:
        """Stop the engine (by default whoever started it); True when one was stopped."""
        with self._mutex, self._file_lock:
            st = self._read_state()
            if st is None or (only_if_owner and st.owner_pid != os.getpid()):
                return False
            self._stop_state(st)
            return True

    # -- internals ------------------------------------------------------------------------

    def _serves(self, st: EngineState, alias: UserModelAlias | DiscoveredModelAlias, purpose: Purpose) -> bool:
        """An engine loaded in embedding mode also serves chat; a chat-only one cannot embed."""
        if purpose == "embeddings" and not st.embedding:
            return False
        return st.config == self._config(alias, st.embedding)[0]

    @staticmethod
    def _embedding_mode(st: EngineState | None, alias: UserModelAlias | DiscoveredModelAlias,
                        purpose: Purpose) -> bool:
        """Embedding mode once asked for, kept while the same alias is served (no back-and-forth)."""
        return purpose == "embeddings" or (st is not None and st.embedding and st.alias == alias.alias)

    def _config(self, alias: UserModelAlias | DiscoveredModelAlias, embedding: bool) -> tuple[str, Path, list[str]]:
        model_path = self.data.gguf_path(alias)
        ctx = alias.context_params.model_dump(exclude_none=True) if isinstance(alias, UserModelAlias) else {}
        ctx.setdefault("n_threads", self.n_threads)  # explicit: the portable build guesses badly
        if embedding:
            ctx["embedding"] = "true"
        args = ["--model", str(model_path), "--model_alias", alias.alias]
        for k, v in sorted(ctx.items()):
            args += [f"--{k}", str(v)]
        digest = hashlib.sha256(json.dumps(args).encode()).hexdigest()[:16]
        return digest, model_path, args

    def _start(self, alias: UserModelAlias | DiscoveredModelAlias, config: str, model_path: Path,
               args: list[str], embedding: bool) -> EngineState:
        self._tidy_logs()
        port = _free_port()
        log_file = self.logs_dir / f"engine-{int(time.time())}-{port}.log"
        api_key = secrets.token_urlsafe(32)
        cmd = [self.python, "-m", ENGINE_MODULE, *args, "--host", "127.0.0.1", "--port", str(port),
               "--idle_timeout", f"{self.idle_timeout:g}", "--state_file", str(self.state_file)]
        log.info("starting local engine for %s on port %d", alias.alias, port)
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o600)
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.PIPE,
                                    env=engine_env(), start_new_session=True, cwd=self.home)
        # The key goes on stdin: a command line or an environment is readable by others.
        assert proc.stdin is not None
        try:
            proc.stdin.write(api_key.encode() + b"\n")
            proc.stdin.close()
        except BrokenPipeError:
            pass  # it died at once; the poll below reports the log
        # Wait for it in the background so an engine that exits on its own leaves no zombie.
        threading.Thread(target=proc.wait, name="bodhi_nb-engine-wait", daemon=True).start()
        st = EngineState(proc.pid, port, alias.alias, config, str(model_path), args, str(log_file), time.time(),
                         os.getpid(), embedding, self.idle_timeout, api_key)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                raise LocalEngineUnavailable(self._failure(
                    f"The local engine for '{alias.alias}' exited with code {code} while starting:\n{_tail(log_file)}"))
            if self._healthy(st, 1.0):
                return st
            time.sleep(0.1)  # readiness poll of a child process, not test synchronisation
        self._stop_state(st)
        raise LocalEngineUnavailable(self._failure(
            f"The local engine for '{alias.alias}' did not become ready within {self.start_timeout:.0f} s:\n"
            f"{_tail(log_file)}"))

    def _tidy_logs(self) -> None:
        """A private logs directory holding only the last KEEP_LOGS engine logs, each 0600."""
        self.logs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.logs_dir.chmod(0o700)  # made by an older version with the umask's mode
        logs = sorted(self.logs_dir.glob("engine-*.log"), key=lambda p: p.stat().st_mtime)
        for i, old in enumerate(logs):
            try:
                if i < len(logs) - (KEEP_LOGS - 1):
                    old.unlink()
                else:
                    old.chmod(0o600)
            except OSError:
                pass

    def _failure(self, msg: str) -> str:
        if self._last_crash:
            msg += f"\nIt had crashed before: {self._last_crash}"
        return msg

    @staticmethod
    def _healthy(st: EngineState, timeout: float) -> bool:
        try:
            r = httpx.get(f"http://127.0.0.1:{st.port}{HEALTH_PATH}", timeout=timeout, trust_env=False,
                          headers={"Authorization": f"Bearer {st.api_key}"})
            return r.status_code == 200
        except httpx.HTTPError:
            return False

    def _stop_state(self, st: EngineState) -> None:
        if _is_our_engine(st) or _is_legacy_engine(st):
            try:
                os.killpg(st.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
            deadline = time.monotonic() + 10
            while _alive(st.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(st.pid):
                try:
                    os.killpg(st.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        try:
            self.state_file.unlink()
        except FileNotFoundError:
            pass
        self._known = None

    def _read_state(self) -> EngineState | None:
        try:
            raw = json.loads(self.state_file.read_text())
            names = {f.name for f in fields(EngineState)}
            return EngineState(**{k: v for k, v in raw.items() if k in names})
        except (FileNotFoundError, ValueError, TypeError, AttributeError):
            return None

    def _write_state(self, st: EngineState) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        atomic_write(self.state_file, json.dumps(asdict(st)), mode=0o600)  # it holds the engine's key
