"""LocalEngine: one llama.cpp server process (llama-cpp-python's) for local aliases.

Like BodhiApp with llama-server, one model is loaded at a time; asking for another
alias (or the same file with other context_params) restarts it. The engine is shared by
every process using the same BODHI_HOME: its pid, port, alias and last use live in
`$BODHI_HOME/engine.json` under a file lock, so a kernel and the Jupyter server reuse
one process instead of loading the model twice.

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
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from filelock import FileLock

from ..objs.errors import LocalEngineUnavailable
from ..objs.model_alias import DiscoveredModelAlias, UserModelAlias
from .data_service import DataService

__all__ = ["LocalEngine", "EngineState", "local_extra_available", "LOCAL_EXTRA_HINT"]

log = logging.getLogger(__name__)

LOCAL_EXTRA_HINT = "pip install 'bodhi_nb[local]'"
_TOUCH_EVERY = 5.0  # seconds between last_use writes from one process


def local_extra_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("uvicorn") is not None


@dataclass
class EngineState:
    """What engine.json records about the running engine."""

    pid: int
    port: int
    alias: str
    config: str  # hash of model path + alias + context params
    model_path: str
    args: list[str]
    log_file: str
    started_at: float
    last_use: float
    owner_pid: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as dead.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def _is_our_engine(st: "EngineState") -> bool:
    """The pid still runs *our* llama.cpp server (pids are reused; never signal a stranger)."""
    try:
        cmdline = Path(f"/proc/{st.pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS): trust the recorded pid
        return _alive(st.pid)
    return b"llama_cpp.server" in cmdline and str(st.port).encode() in cmdline


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
        data: DataService,
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
        self.n_threads = n_threads or int(os.environ.get("BODHI_NB_THREADS", 0)) or os.cpu_count() or 2
        self.python = python
        self.state_file = self.home / "engine.json"
        self.logs_dir = self.home / "logs"
        self._file_lock = FileLock(str(self.state_file) + ".lock", timeout=self.start_timeout + 60, thread_local=False)
        self._mutex = threading.Lock()
        self._known: EngineState | None = None
        self._last_touch = 0.0
        self._last_crash: str | None = None

    # -- public ---------------------------------------------------------------------------

    async def ensure(self, alias: UserModelAlias | DiscoveredModelAlias) -> str:
        """The base URL of an engine serving `alias`, starting or switching it if needed."""
        known = self._known
        if known is not None and known.config == self._config(alias)[0] and _is_our_engine(known):
            self._touch()
            return known.base_url
        return await asyncio.to_thread(self.ensure_sync, alias)

    def ensure_sync(self, alias: UserModelAlias | DiscoveredModelAlias) -> str:
        if not local_extra_available():
            raise LocalEngineUnavailable(
                f"'{alias.alias}' is a local model, but llama-cpp-python is not installed. Install it with: {LOCAL_EXTRA_HINT}")
        config, model_path, args = self._config(alias)
        with self._mutex, self._file_lock:
            st = self._read_state()
            if st is not None and st.config == config and _is_our_engine(st) and self._healthy(st, 2.0):
                st.last_use = time.time()
                self._write_state(st)
                self._known = st
                return st.base_url
            if st is not None:
                if not _is_our_engine(st) and st.config == config:
                    self._last_crash = _tail(Path(st.log_file), 8) or "the process exited"
                    log.warning("local engine for %s had died; restarting", st.alias)
                self._stop_state(st)
            st = self._start(alias, config, model_path, args)
            self._write_state(st)
            self._known = st
            self._last_crash = None
            return st.base_url

    def status(self) -> dict[str, Any] | None:
        st = self._read_state()
        if st is None:
            return None
        return {**asdict(st), "alive": _is_our_engine(st), "base_url": st.base_url}

    def stop(self, only_if_owner: bool = False) -> bool:
        """Stop the engine (by default whoever started it); True when one was stopped."""
        with self._mutex, self._file_lock:
            st = self._read_state()
            if st is None or (only_if_owner and st.owner_pid != os.getpid()):
                return False
            self._stop_state(st)
            return True

    def reap_idle(self) -> bool:
        """Stop the engine when no process has used it for `idle_timeout` seconds."""
        st = self._read_state()
        if st is None or time.time() - st.last_use < self.idle_timeout:
            return False
        with self._mutex, self._file_lock:
            st = self._read_state()
            if st is None or time.time() - st.last_use < self.idle_timeout:
                return False
            log.info("stopping idle local engine (%s)", st.alias)
            self._stop_state(st)
            return True

    # -- internals ------------------------------------------------------------------------

    def _config(self, alias: UserModelAlias | DiscoveredModelAlias) -> tuple[str, Path, list[str]]:
        model_path = self.data.gguf_path(alias)
        ctx = alias.context_params.model_dump(exclude_none=True) if isinstance(alias, UserModelAlias) else {}
        ctx.setdefault("n_threads", self.n_threads)
        args = ["--model", str(model_path), "--model_alias", alias.alias]
        for k, v in sorted(ctx.items()):
            args += [f"--{k}", str(v)]
        digest = hashlib.sha256(json.dumps(args).encode()).hexdigest()[:16]
        return digest, model_path, args

    def _start(self, alias: UserModelAlias | DiscoveredModelAlias, config: str, model_path: Path,
               args: list[str]) -> EngineState:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        log_file = self.logs_dir / f"engine-{int(time.time())}-{port}.log"
        cmd = [self.python, "-m", "llama_cpp.server", *args, "--host", "127.0.0.1", "--port", str(port)]
        log.info("starting local engine for %s on port %d", alias.alias, port)
        with open(log_file, "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=self.home)
        now = time.time()
        st = EngineState(proc.pid, port, alias.alias, config, str(model_path), args, str(log_file), now, now,
                         os.getpid())
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

    def _failure(self, msg: str) -> str:
        if self._last_crash:
            msg += f"\nIt had crashed before: {self._last_crash}"
        return msg

    @staticmethod
    def _healthy(st: EngineState, timeout: float) -> bool:
        try:
            r = httpx.get(f"{st.base_url}/models", timeout=timeout, trust_env=False)
            return r.status_code == 200
        except httpx.HTTPError:
            return False

    def _stop_state(self, st: EngineState) -> None:
        if _is_our_engine(st):
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

    def _touch(self) -> None:
        now = time.time()
        if now - self._last_touch < _TOUCH_EVERY:
            return
        self._last_touch = now
        if not self._mutex.acquire(blocking=False):
            return  # a start or stop is under way; it writes last_use itself
        try:
            with self._file_lock.acquire(timeout=0.5):
                st = self._read_state()
                if st is not None:
                    st.last_use = now
                    self._write_state(st)
        except Exception:  # a busy lock only delays the idle clock
            pass
        finally:
            self._mutex.release()

    def _read_state(self) -> EngineState | None:
        try:
            return EngineState(**json.loads(self.state_file.read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def _write_state(self, st: EngineState) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(st)))
        os.replace(tmp, self.state_file)
