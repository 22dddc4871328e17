"""How every fake provider script starts: `--key`, a free loopback port, `PORT <n>` on stdout.

tests/resources/servers.py `start_fake` runs the scripts and reads that line."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import tornado.web


def serve(build: Callable[[argparse.Namespace], tornado.web.Application], *,
          flags: Sequence[tuple[str, dict[str, Any]]] = ()) -> None:
    """Parse `--key` (and `flags`), build the app, listen on 127.0.0.1 at a free port, print it, serve forever."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--key")
    for name, kw in flags:
        ap.add_argument(name, **kw)
    args = ap.parse_args()

    async def main() -> None:
        server = build(args).listen(0, address="127.0.0.1")
        port = next(iter(server._sockets.values())).getsockname()[1]
        print(f"PORT {port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
