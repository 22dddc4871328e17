"""An OpenAI-compatible upstream on 127.0.0.1 for batch tests and benchmarks (the remote edge).

Run: python batch_upstream.py [--key KEY]  -> prints "PORT <n>" once listening.

Models: `lat-N` answers after N ms; `echo` at once; any other name is 404 model_not_found.
The last user message may start with a directive:
  !429:N        the first request with this text gets 429 + Retry-After: N (seconds)
  !429date:N    the same with Retry-After as an HTTP date N seconds ahead
  !429reset:N   the same with only x-ratelimit-reset-requests: "Ns"
  !503          the first request with this text gets 503, the next succeed
  !503always    always 503
  !400          always 400
  !slow         the first request with this text answers after 60 s (or when the client goes away)
  !json TEXT    replies with TEXT verbatim
Otherwise the reply is "echo: <text>". The server keeps its own record of every request:
GET /_stats -> {"max_in_flight", "in_flight", "requests": [{"t", "t_end", "text", "status"}], "other": [...]}
(times from this process's clock, time.time()); POST /_stats clears it. Any other path is a 404
in the OpenAI envelope, kept in "other" as "METHOD /path?query" (it has no Files or Batches API);
POST /_stats?listing=405 makes GET /v1/batches a 405 instead, until the next POST /_stats.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections import Counter
from typing import Any

import tornado.web

STATE: dict[str, Any] = {"in_flight": 0, "max_in_flight": 0, "requests": [], "seen": Counter(), "other": [],
                         "listing": 404}


def reset(listing: int = 404) -> None:
    STATE.update(in_flight=0, max_in_flight=0, requests=[], seen=Counter(), other=[], listing=listing)


class Stats(tornado.web.RequestHandler):
    def get(self) -> None:
        self.finish({k: STATE[k] for k in ("in_flight", "max_in_flight", "requests", "other")})

    def post(self) -> None:
        reset(int(self.get_query_argument("listing", "404")))
        self.finish({})


def envelope(message: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "server_error", "param": None, "code": code}}


class Chat(tornado.web.RequestHandler):
    _gone: asyncio.Event

    def prepare(self) -> None:
        self._gone = asyncio.Event()

    def on_connection_close(self) -> None:
        self._gone.set()

    async def _wait(self, seconds: float) -> bool:
        """Sleep; False when the client went away meanwhile."""
        try:
            await asyncio.wait_for(self._gone.wait(), seconds)
            return False
        except asyncio.TimeoutError:
            return True

    async def post(self) -> None:
        rec: dict[str, Any] = {"t": time.time(), "text": None, "status": None}
        STATE["requests"].append(rec)
        STATE["in_flight"] += 1
        STATE["max_in_flight"] = max(STATE["max_in_flight"], STATE["in_flight"])
        try:
            await self._answer(rec)
        finally:
            STATE["in_flight"] -= 1
            rec["t_end"] = time.time()

    async def _answer(self, rec: dict[str, Any]) -> None:
        key = self.settings.get("api_key")
        if key and self.request.headers.get("Authorization") != f"Bearer {key}":
            rec["status"] = 401
            self.set_status(401)
            self.finish(envelope("Incorrect API key provided.", "invalid_api_key"))
            return
        body = json.loads(self.request.body)
        model = str(body.get("model", ""))
        users = [m for m in body.get("messages", []) if m.get("role") == "user"]
        text = str(users[-1].get("content", "")) if users else ""
        rec["text"] = text
        rec["response_format"] = body.get("response_format")
        STATE["seen"][text] += 1
        first = STATE["seen"][text] == 1
        if model.startswith("lat-"):
            if not await self._wait(int(model[4:]) / 1000):
                rec["status"] = "gone"
                return
        elif model != "echo":
            return self._fail(rec, 404, f"The model `{model}` does not exist", "model_not_found")
        if first and text.startswith("!slow") and not await self._wait(60):
            rec["status"] = "gone"
            return
        directive, _, arg = text.partition(" ")[0].partition(":")
        if first and directive == "!429":
            self.set_header("Retry-After", arg)
            return self._fail(rec, 429, "Rate limit reached", "rate_limit_exceeded")
        if first and directive == "!429date":
            rec["retry_after"] = email.utils.formatdate(time.time() + float(arg), usegmt=True)
            self.set_header("Retry-After", rec["retry_after"])
            return self._fail(rec, 429, "Rate limit reached", "rate_limit_exceeded")
        if first and directive == "!429reset":
            self.set_header("x-ratelimit-reset-requests", f"{arg}s")
            return self._fail(rec, 429, "Rate limit reached", "rate_limit_exceeded")
        if (first and directive == "!503") or directive == "!503always":
            return self._fail(rec, 503, "Service temporarily unavailable")
        if directive == "!400":
            return self._fail(rec, 400, "Invalid value for 'messages'", "invalid_value")
        reply = text[len("!json "):] if text.startswith("!json ") else f"echo: {text}"
        rec["status"] = 200
        n = len(reply.split())
        self.finish({"id": "chatcmpl-batch", "object": "chat.completion", "created": int(time.time()), "model": model,
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                  "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n}})

    def _fail(self, rec: dict[str, Any], status: int, message: str, code: str | None = None) -> None:
        rec["status"] = status
        self.set_status(status)
        self.finish(envelope(message, code))


class Elsewhere(tornado.web.RequestHandler):
    """Every other path: not served, and remembered (GET /_stats, "other")."""

    def prepare(self) -> None:
        STATE["other"].append(f"{self.request.method} {self.request.uri}")
        self.set_status(STATE["listing"] if self.request.method == "GET" and self.request.path == "/v1/batches" else 404)
        self.finish(envelope(f"Unknown request URL: {self.request.method} {self.request.path}.", "unknown_url"))


def make_app(api_key: str | None) -> tornado.web.Application:
    return tornado.web.Application([(r"/v1/chat/completions", Chat), (r"/_stats", Stats)], api_key=api_key,
                                   default_handler_class=Elsewhere)


if __name__ == "__main__":
    from serve import serve  # (run as a script: this folder is on sys.path)

    serve(lambda args: make_app(args.key))
