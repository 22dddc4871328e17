"""A small real OpenAI-compatible server on 127.0.0.1 for tests (the remote-provider edge).

Run: python fake_openai.py [--key KEY]  -> prints "PORT <n>" once listening.
Behaviour by model name:
  echo*          reply "echo: <last user message>"; streamed as one chunk per word
  slow-stream    max_tokens words (default 2,000), for relay tests; x_chunk_rate paces them
  paced-N        slow-stream at N chunks per second
  forever        a stream that never ends (one chunk every 50 ms)
  cut            stream: two chunks, then the connection is dropped
  slow-first     waits 30 s before answering
  status-NNN     answers HTTP NNN with an OpenAI error envelope (429 adds Retry-After: 7)
  not-json       answers 200 with a body that is not JSON
  echo-key       a provider that quotes the key it received: 401 "Incorrect API key provided:
                 <key>" (also in a WWW-Authenticate header); streamed, a first chunk and then that
                 text as a mid-stream error event, split across two writes
Under the path prefix /echo-key/v1, GET models and POST chat/completions both answer that 401.
GET /v1/models lists: echo, echo-2, slow-stream, forever, cut.
GET /_last returns the last chat request's headers, body and raw bytes as text (for assertions).
GET /_counts returns chat requests received per model name ({model: n}); POST /_counts clears it.
  structured     replies with JSON that matches response_format.json_schema.schema (a minimal instance)
  tool           calls the first tool with {"city": "Paris"} (streamed: arguments in two fragments); once the
                 last message is a tool result, answers "tool said: <result>"
POST /v1/embeddings: one 8-dimensional vector per input text, derived from the text's SHA-256
(the same text always gets the same vector); encoding_format "base64" is float32
little-endian as OpenAI sends it; models status-NNN and echo-key fail as for chat.
With --key, every /v1 request needs "Authorization: Bearer KEY" (else 401).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
import time

import tornado.iostream
import tornado.web

LAST: dict = {}
COUNTS: dict[str, int] = {}
OPEN_STREAMS = {"n": 0}


class Base(tornado.web.RequestHandler):
    def check_key(self) -> bool:
        key = self.settings.get("api_key")
        if key and self.request.headers.get("Authorization") != f"Bearer {key}":
            self.set_status(401)
            self.finish({"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                   "param": None, "code": "invalid_api_key"}})
            return False
        return True


def received_key(handler: tornado.web.RequestHandler) -> str:
    return handler.request.headers.get("Authorization", "").removeprefix("Bearer ")


def echo_key_401(handler: tornado.web.RequestHandler) -> None:
    key = received_key(handler)
    handler.set_status(401)
    handler.set_header("WWW-Authenticate", f'Bearer error="invalid_token", key="{key}"')
    handler.finish({"error": {"message": f"Incorrect API key provided: {key}. You can find your API key at "
                                         "https://example.invalid/keys.", "type": "invalid_request_error",
                              "param": None, "code": "invalid_api_key"}})


class EchoKey(tornado.web.RequestHandler):
    """Every request under /echo-key/v1: the 401 that quotes the key."""

    def get(self, _: str) -> None:
        echo_key_401(self)

    def post(self, _: str) -> None:
        echo_key_401(self)


class Models(Base):
    def get(self) -> None:
        if self.check_key():
            ids = ["echo", "echo-2", "slow-stream", "forever", "cut"]
            self.finish({"object": "list", "data": [{"id": i, "object": "model", "created": 0, "owned_by": "fake"} for i in ids]})


class Counts(tornado.web.RequestHandler):
    def get(self) -> None:
        self.finish(dict(COUNTS))

    def post(self) -> None:
        COUNTS.clear()
        self.finish({})


def example(schema: dict, defs: dict | None = None) -> object:
    """A minimal JSON value valid against `schema` (the subset pydantic models produce)."""
    defs = schema.get("$defs", {}) if defs is None else defs
    if "$ref" in schema:
        return example(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
            return example(options[0], defs)
    kind = schema.get("type")
    if kind == "object":
        return {k: example(v, defs) for k, v in schema.get("properties", {}).items()}
    return {"string": "text", "integer": 1, "number": 1.5, "boolean": True, "array": [], "null": None}.get(kind, "x")


def embedding(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round((b - 127.5) / 127.5, 4) for b in digest[:8]]


class Embeddings(Base):
    def post(self) -> None:
        body = json.loads(self.request.body)
        LAST.clear()
        LAST.update(headers=dict(self.request.headers), body=body, raw=self.request.body.decode())
        if not self.check_key():
            return
        model = str(body.get("model", ""))
        if model == "echo-key":
            echo_key_401(self)
            return
        if model.startswith("status-"):
            code = int(model.split("-")[1])
            self.set_status(code)
            self.finish({"error": {"message": f"fake upstream says {code}", "type": "server_error", "param": None,
                                   "code": None}})
            return
        inp = body.get("input")
        texts = [inp] if isinstance(inp, str) else [str(t) for t in inp]
        data = []
        for i, t in enumerate(texts):
            vec = embedding(t)
            if body.get("encoding_format") == "base64":
                vec = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
            data.append({"object": "embedding", "embedding": vec, "index": i})
        data.reverse()  # listed out of order on purpose: clients must sort by index
        tokens = sum(len(t.split()) for t in texts)
        self.finish({"object": "list", "data": data, "model": model,
                     "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


class Last(tornado.web.RequestHandler):
    def get(self) -> None:
        self.finish({**LAST, "open_streams": OPEN_STREAMS["n"]})


def chunk(model: str, text: str | None, finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": {} if text is None else {"content": text}, "finish_reason": finish}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def text_of(content: object) -> str:
    """A message's text: the string, or its text parts joined (image parts are left out)."""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content if isinstance(content, str) else ""


def tool_call_args(tools: list) -> tuple[str, str]:
    """The first tool's name and the arguments the `tool` model calls it with."""
    fn = (tools[0].get("function") or {}) if tools else {}
    return str(fn.get("name") or "none"), json.dumps({"city": "Paris"})


class Chat(Base):
    async def tool(self, body: dict) -> None:
        """Model `tool`: calls the first tool with {"city": "Paris"}; after a tool result, answers
        "tool said: <result>". Streamed: the call's arguments arrive in two fragments."""
        model, msgs = body["model"], body.get("messages", [])
        usage = {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
        if msgs and msgs[-1].get("role") == "tool":
            message = {"role": "assistant", "content": "tool said: " + text_of(msgs[-1].get("content"))}
            finish, deltas = "stop", [{"role": "assistant", "content": message["content"]}]
        else:
            name, args = tool_call_args(body.get("tools") or [])
            call = {"id": "call_fake1", "type": "function", "function": {"name": name, "arguments": args}}
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            finish = "tool_calls"
            deltas = [{"role": "assistant", "content": None, "tool_calls": [
                          {"index": 0, "id": "call_fake1", "type": "function", "function": {"name": name, "arguments": ""}}]},
                      {"tool_calls": [{"index": 0, "function": {"arguments": args[:7]}}]},
                      {"tool_calls": [{"index": 0, "function": {"arguments": args[7:]}}]}]
        if not body.get("stream"):
            self.finish({"id": "chatcmpl-tool", "object": "chat.completion", "created": int(time.time()), "model": model,
                         "choices": [{"index": 0, "message": {**message, "refusal": None}, "finish_reason": finish,
                                      "logprobs": None}], "usage": usage})
            return
        self.set_header("Content-Type", "text/event-stream")
        base = {"id": "chatcmpl-tool", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        for d in deltas:
            self.write(b"data: " + json.dumps({**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]}).encode() + b"\n\n")
        self.write(b"data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}).encode() + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            self.write(b"data: " + json.dumps({**base, "choices": [], "usage": usage}).encode() + b"\n\n")
        self.write(b"data: [DONE]\n\n")
        self.finish()

    async def post(self) -> None:
        body = json.loads(self.request.body)
        COUNTS[str(body.get("model", ""))] = COUNTS.get(str(body.get("model", "")), 0) + 1
        LAST.clear()
        LAST.update(headers=dict(self.request.headers), body=body, raw=self.request.body.decode())
        if not self.check_key():
            return
        model = body.get("model", "")
        if model == "echo-key" and not body.get("stream"):
            echo_key_401(self)
            return
        if model == "echo-key":
            key = received_key(self)
            self.set_header("Content-Type", "text/event-stream")
            self.write(chunk(model, "partial "))
            await self.flush()
            event = b"data: " + json.dumps({"error": {"message": f"Incorrect API key provided: {key}",
                                                      "type": "invalid_request_error"}}).encode() + b"\n\n"
            half = event.index(key.encode()) + len(key) // 2  # the key split across two writes
            self.write(event[:half])
            await self.flush()
            self.write(event[half:])
            self.finish()
            return
        if model.startswith("status-"):
            code = int(model.split("-")[1])
            self.set_status(code)
            if code == 429:
                self.set_header("Retry-After", "7")
            self.finish({"error": {"message": f"fake upstream says {code}", "type": "server_error", "param": None,
                                   "code": None}})
            return
        if model == "not-json":
            self.finish("this is not json")
            return
        if model == "slow-first":
            await asyncio.sleep(30)
        user = [m for m in body.get("messages", []) if m.get("role") == "user"]
        text = "echo: " + (text_of(user[-1].get("content")) if user else "")
        if model == "tool":
            await self.tool(body)
            return
        if model == "structured":
            rf = body.get("response_format") or {}
            text = json.dumps(example((rf.get("json_schema") or {}).get("schema") or {"type": "object"}))
        words = text.split(" ")
        if model == "slow-stream" or model.startswith("paced-"):
            words = [f"w{i}" for i in range(int(body.get("max_tokens") or body.get("max_completion_tokens") or 2000))]
        if not body.get("stream"):
            self.set_header("Set-Cookie", "upstream=1")
            self.set_header("X-Upstream", "yes")
            self.finish({"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                                      "finish_reason": "stop", "logprobs": None}],
                         "usage": {"prompt_tokens": 3, "completion_tokens": len(words), "total_tokens": 3 + len(words)}})
            return
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        OPEN_STREAMS["n"] += 1
        try:
            if model == "forever":
                i = 0
                while True:
                    self.write(chunk(model, f"tick{i} "))
                    await self.flush()
                    i += 1
                    await asyncio.sleep(0.05)
            if model == "cut":
                for w in ("first ", "second "):
                    self.write(chunk(model, w))
                    await self.flush()
                self.request.connection.stream.close()
                return
            # pace chunks (per second) when asked: x_chunk_rate, or a model named paced-N (for clients of other
            # dialects, whose requests carry no extra fields)
            rate = float(body.get("x_chunk_rate") or (model.split("-")[1] if model.startswith("paced-") else 0))
            t0 = time.perf_counter()
            for i, w in enumerate(words):
                if rate:
                    ahead = t0 + i / rate - time.perf_counter()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                self.write(chunk(model, w if i == len(words) - 1 else w + " "))
                await self.flush()
            self.write(chunk(model, None, "stop"))
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model,
                         "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": len(words),
                                                  "total_tokens": 3 + len(words)}}
                self.write(b"data: " + json.dumps(usage).encode() + b"\n\n")
            self.write(b"data: [DONE]\n\n")
            await self.flush()
            self.finish()
        except tornado.iostream.StreamClosedError:
            pass
        finally:
            OPEN_STREAMS["n"] -= 1


def make_app(api_key: str | None) -> tornado.web.Application:
    return tornado.web.Application(
        [(r"/v1/models", Models), (r"/v1/chat/completions", Chat), (r"/echo-key/v1/(.*)", EchoKey),
         (r"/_last", Last), (r"/_counts", Counts),
         (r"/v1/embeddings", Embeddings)], api_key=api_key)


if __name__ == "__main__":
    from serve import serve  # (run as a script: this folder is on sys.path)

    serve(lambda args: make_app(args.key))
