"""Private: the local engine process, llama_cpp.server's own app plus an idle timer.

`LocalEngine` runs `python -m bodhi_nb.services._engine_main <llama_cpp.server args>
--idle_timeout S --state_file PATH` and writes the per-start API key on stdin, so the key
is in neither the command line nor the environment (both readable by other processes).

The engine exits by itself once no request has arrived for `idle_timeout` seconds: the
processes that use it may die without a word (a kernel SIGKILLed by a runner), so
nothing outside this process can be relied on to stop it. Before exiting it removes
`engine.json`, if that still names this process, under the same file lock `LocalEngine`
takes to start or reuse an engine; a client that checked health under the lock has
just reset the timer, so an engine is never retired between a health check and its
request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

__all__ = ["HEALTH_PATH", "IDLE_EXIT_MESSAGE", "main"]

IDLE_EXIT_MESSAGE = "bodhi_nb engine: idle timeout reached, exiting"
HEALTH_PATH = "/bodhi/health"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class IdleClock:
    """ASGI middleware: the time since the last request finished (0 while one runs).

    A streamed completion counts as one request until its last byte, so a long
    generation never looks idle.
    """

    def __init__(self, app: App) -> None:
        self.app = app
        self.active = 0
        self.last = time.monotonic()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
            self.last = time.monotonic()

    def idle_for(self) -> float:
        return 0.0 if self.active else time.monotonic() - self.last


def _release_state(state_file: Path, clock: IdleClock, idle_timeout: float) -> bool | None:
    """Under the engine lock: still idle? Then forget engine.json if it names us.

    True: exit now. False: a client checked health while we waited for the lock.
    None: the lock stayed busy.
    """
    from filelock import FileLock, Timeout

    try:
        with FileLock(str(state_file) + ".lock", timeout=5):
            if clock.idle_for() < idle_timeout:
                return False
            try:
                if json.loads(state_file.read_text()).get("pid") == os.getpid():
                    state_file.unlink()
            except (OSError, ValueError, AttributeError):
                pass
            return True
    except Timeout:
        return None


async def _watch_idle(server: Any, clock: IdleClock, idle_timeout: float, state_file: Path | None) -> None:
    tick = min(1.0, max(idle_timeout / 4, 0.05))
    busy = 0
    while not server.should_exit:
        await asyncio.sleep(tick)
        if clock.idle_for() < idle_timeout:
            continue
        if state_file is not None:
            released = await asyncio.to_thread(_release_state, state_file, clock, idle_timeout)
            if released is False:
                continue
            if released is None:
                busy += 1
                if busy < 3:  # a lock held for good must not keep the engine alive for good
                    continue
        print(f"{IDLE_EXIT_MESSAGE} ({idle_timeout:g} s)", flush=True)
        server.should_exit = True


def _parser() -> argparse.ArgumentParser:
    from llama_cpp.server.cli import add_args_from_model
    from llama_cpp.server.settings import Settings

    parser = argparse.ArgumentParser(prog="bodhi_nb.services._engine_main")
    add_args_from_model(parser, Settings)
    parser.add_argument("--idle_timeout", type=float, required=True, help="Exit after this many idle seconds.")
    parser.add_argument("--state_file", type=Path, default=None, help="engine.json to forget on idle exit.")
    return parser


def _embedding_pooling(model_settings: Any) -> None:
    """Mean pooling for a chat model loaded for embeddings (one vector per input).

    A causal LM's GGUF declares no pooling type, and llama.cpp would then return one
    vector per token. A model that declares its own (a real embedding model) keeps it.
    """
    if not model_settings.embedding:
        return
    from llama_cpp import Llama

    meta = Llama(model_path=model_settings.model, vocab_only=True, verbose=False).metadata
    arch = meta.get("general.architecture")
    if arch and f"{arch}.pooling_type" not in meta:
        model_settings.kv_overrides = [*(model_settings.kv_overrides or []), f"{arch}.pooling_type=int:1"]


def _add_health_route(app: Any) -> None:
    """A keyed health check that skips the model lock.

    llama_cpp.server's `/v1/models` waits for the model lock, and taking that lock
    interrupts a stream in progress, so a second process checking health would cut
    another's reply short.
    """
    from fastapi import Depends
    from llama_cpp.server.app import authenticate

    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.add_api_route(HEALTH_PATH, health, methods=["GET"], dependencies=[Depends(authenticate)],
                      include_in_schema=False)


def main(argv: list[str] | None = None) -> int:
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    args = _parser().parse_args(argv)
    api_key = sys.stdin.readline().strip()
    if not api_key:
        print("bodhi_nb engine: no API key on stdin; refusing to serve without one", file=sys.stderr)
        return 2
    args.api_key = None  # never from the command line
    given = {k: v for k, v in vars(args).items() if v is not None}
    server_settings = ServerSettings(**{k: v for k, v in given.items() if k in ServerSettings.model_fields})
    server_settings.api_key = api_key
    # One model serves every process on this BODHI_HOME: a second request waits its turn
    # instead of cutting the reply in progress short (llama_cpp.server's default).
    server_settings.interrupt_requests = False
    model_settings = ModelSettings(**{k: v for k, v in given.items() if k in ModelSettings.model_fields})
    _embedding_pooling(model_settings)
    from ._engine_fidelity import install as install_fidelity

    install_fidelity()  # unit-length embeddings; streams end with a usage chunk counted by the engine
    app = create_app(server_settings=server_settings, model_settings=[model_settings])
    _add_health_route(app)
    clock = IdleClock(app)
    config = uvicorn.Config(clock, host=server_settings.host, port=server_settings.port,
                            timeout_graceful_shutdown=5, log_level="info")
    server = uvicorn.Server(config)

    async def serve() -> None:
        watcher = asyncio.create_task(_watch_idle(server, clock, args.idle_timeout, args.state_file))
        try:
            await server.serve()
        finally:
            watcher.cancel()

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
