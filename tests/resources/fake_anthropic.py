"""A small real Anthropic Messages server on 127.0.0.1 for tests (the remote-provider edge).

Run: python fake_anthropic.py [--key KEY]  -> prints "PORT <n>" once listening.

Every /v1 request is checked as the real API checks it (API version 2023-06-01), each failure
answered with Anthropic's error envelope `{"type": "error", "error": {type, message},
"request_id"}`:
- `x-api-key` must be present (and equal KEY with --key), else 401 authentication_error; an
  `Authorization` header is neither needed nor read;
- `anthropic-version` must be `2023-06-01`, else 400 invalid_request_error;
- POST /v1/messages: the body is a JSON object with only documented top-level fields;
  `model` (string), `max_tokens` (integer >= 1) and `messages` (non-empty) are required;
  roles are user/assistant only (a `system` role is the real API's 400: system goes top level),
  alternating and starting with user; each content is a string or a list of known blocks
  (text, image with a base64 or url source, document, tool_use, tool_result, thinking,
  redacted_thinking), text non-empty; every tool_use of an assistant turn is answered by a
  tool_result, first in the next user turn, and every tool_result answers one; `system` is a
  string or text blocks; stop_sequences, tools, tool_choice, metadata, output_config, stream,
  temperature, top_p and top_k have their documented shapes.
Behaviour by model name:
  echo*          reply "echo: <last user text>", cut at a stop sequence (stop_reason
                 stop_sequence) or after max_tokens words (max_tokens); streamed one word a delta
  tool           calls the first tool (or the one tool_choice names) with a minimal input valid
                 for its input_schema; streamed as input_json_delta fragments; once the last turn
                 holds tool results, answers "tool said: <their text>"
  text-tool      "Let me look." and then that tool call: two blocks
  thinking       a thinking block (thinking_delta, signature_delta) before the echo text
  structured     replies with JSON matching output_config.format.schema (a minimal instance)
  refusal        "I can't" and stop_reason refusal
  status-NNN     answers HTTP NNN with the envelope of that status (429 adds Retry-After: 7)
  overloaded     stream: message_start, one text delta, then `event: error` overloaded_error
  echo-key       a provider that quotes the key it received: 401 "invalid x-api-key: <key>";
                 streamed, a first text delta and then that text as an `event: error`, split
                 across two writes in the middle of the key
Under the path prefix /echo-key/v1, GET models and POST messages both answer that 401.
Streams send the real sequence with `event:` lines: message_start, ping, per block
content_block_start / content_block_delta... / content_block_stop, message_delta
(stop_reason, usage.output_tokens), message_stop.
Usage: input_tokens counts the words of the request's text; output_tokens those of the reply.
GET /v1/models lists: echo, echo-2, tool, structured, thinking (limit, after_id honoured).
Any other path answers 404 not_found_error.
GET /_last returns the last /v1 request's headers, body and raw bytes (for assertions).
"""

from __future__ import annotations

import json
import uuid

import tornado.iostream
import tornado.web

try:  # run as a script (start_fake), this folder is on sys.path
    from fake_openai import example
except ImportError:  # imported as tests.resources.fake_anthropic
    from tests.resources.fake_openai import example

VERSION = "2023-06-01"
LAST: dict = {}
MODELS = ["echo", "echo-2", "tool", "structured", "thinking"]
TOP_LEVEL = {"model", "max_tokens", "messages", "system", "stop_sequences", "temperature", "top_p", "top_k", "stream",
             "tools", "tool_choice", "metadata", "output_config", "thinking", "service_tier", "cache_control",
             "container", "inference_geo", "speed", "diagnostics", "user_profile_id", "workspace_id"}
BLOCKS = {"text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking", "search_result"}
STATUS_TYPE = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
               500: "api_error", 504: "timeout_error", 529: "overloaded_error"}


class Invalid(Exception):
    """A request the real API would refuse with 400 invalid_request_error."""


def envelope(status: int, message: str) -> dict:
    return {"type": "error", "error": {"type": STATUS_TYPE.get(status, "api_error"), "message": message},
            "request_id": f"req_fake{uuid.uuid4().hex[:12]}"}


def _check_text(block: dict, where: str) -> None:
    if not isinstance(block.get("text"), str) or not block["text"]:
        raise Invalid(f"{where}: text content blocks must be non-empty")


def _check_block(block: object, where: str) -> None:
    if not isinstance(block, dict) or block.get("type") not in BLOCKS:
        raise Invalid(f"{where}.type: Input tag '{block.get('type') if isinstance(block, dict) else block}' "
                      "found using 'type' does not match any of the expected tags")
    kind = block["type"]
    if kind == "text":
        _check_text(block, where)
    elif kind == "image":
        src = block.get("source") or {}
        if src.get("type") == "base64":
            if src.get("media_type") not in ("image/jpeg", "image/png", "image/gif", "image/webp") or not isinstance(
                    src.get("data"), str):
                raise Invalid(f"{where}.source: base64 images need media_type and data")
        elif src.get("type") != "url" or not isinstance(src.get("url"), str):
            raise Invalid(f"{where}.source: an image source is base64 or url")
    elif kind == "tool_use":
        if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str) or not isinstance(
                block.get("input"), dict):
            raise Invalid(f"{where}: tool_use needs id, name and an input object")
    elif kind == "tool_result":
        if not isinstance(block.get("tool_use_id"), str):
            raise Invalid(f"{where}.tool_use_id: Field required")
        content = block.get("content")
        if content is not None and not isinstance(content, str):
            if not isinstance(content, list):
                raise Invalid(f"{where}.content: a string or a list of blocks")
            for j, inner in enumerate(content):
                _check_block(inner, f"{where}.content.{j}")
        if "is_error" in block and not isinstance(block["is_error"], bool):
            raise Invalid(f"{where}.is_error: a boolean")


def _blocks(content: object) -> list:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)  # type: ignore[arg-type]


def _check_messages(messages: object) -> None:
    if not isinstance(messages, list) or not messages:
        raise Invalid("messages: at least one message is required")
    expected = "user"
    pending: set[str] = set()  # tool_use ids the next user turn must answer
    for i, m in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(m, dict):
            raise Invalid(f"{where}: an object")
        role = m.get("role")
        if role == "system":
            raise Invalid(f'{where}: Unexpected role "system". The Messages API accepts a top-level `system` '
                          "parameter, not \"system\" as an input message role.")
        if role not in ("user", "assistant"):
            raise Invalid(f"{where}.role: Input should be 'user' or 'assistant'")
        if role != expected:
            raise Invalid(f"{where}: roles must alternate between \"user\" and \"assistant\", starting with user")
        content = m.get("content")
        if isinstance(content, str):
            if not content and i < len(messages) - 1:
                raise Invalid(f"{where}: all messages must have non-empty content")
        elif isinstance(content, list):
            if not content:
                raise Invalid(f"{where}: all messages must have non-empty content")
            for j, block in enumerate(content):
                _check_block(block, f"{where}.content.{j}")
        else:
            raise Invalid(f"{where}.content: a string or a list of content blocks")
        blocks = _blocks(content)
        if role == "user":
            results = [b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"]
            if pending:
                lead = [b.get("tool_use_id") for b in blocks[:len(pending)] if b.get("type") == "tool_result"]
                if set(lead) != pending:
                    raise Invalid(f"{where}: tool_use ids were found without tool_result blocks immediately after: "
                                  f"{', '.join(sorted(pending))}. Each tool_use block must have a corresponding "
                                  "tool_result block in the next message, first in its content.")
            unknown = set(results) - pending
            if unknown:
                raise Invalid(f"{where}: unexpected tool_use_id found in tool_result blocks: {', '.join(unknown)}. "
                              "Each tool_result block must have a corresponding tool_use block in the previous "
                              "message.")
            pending = set()
        else:
            if pending:
                raise Invalid(f"{where}: tool_use without tool_result")
            pending = {b["id"] for b in blocks if b.get("type") == "tool_use"}
        expected = "assistant" if role == "user" else "user"


def check_body(body: object) -> None:
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    extra = sorted(set(body) - TOP_LEVEL)
    if extra:
        raise Invalid(f"{extra[0]}: Extra inputs are not permitted")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise Invalid("model: Field required")
    mt = body.get("max_tokens")
    if not isinstance(mt, int) or isinstance(mt, bool) or mt < 1:
        raise Invalid("max_tokens: Field required (an integer >= 1)")
    _check_messages(body.get("messages"))
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        if not isinstance(system, list):
            raise Invalid("system: a string or a list of text blocks")
        for j, block in enumerate(system):
            if not isinstance(block, dict) or block.get("type") != "text":
                raise Invalid(f"system.{j}.type: Input should be 'text'")
            _check_text(block, f"system.{j}")
    stops = body.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)):
        raise Invalid("stop_sequences: a list of strings")
    for field, lo, hi in (("temperature", 0, 1), ("top_p", 0, 1)):
        v = body.get(field)
        if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or not lo <= v <= hi):
            raise Invalid(f"{field}: a number from {lo} to {hi}")
    if "top_k" in body and (not isinstance(body["top_k"], int) or body["top_k"] < 0):
        raise Invalid("top_k: a non-negative integer")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise Invalid("stream: a boolean")
    names = []
    for j, tool in enumerate(body.get("tools") or []):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise Invalid(f"tools.{j}.name: Field required")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise Invalid(f"tools.{j}.input_schema.type: Input should be 'object'")
        extra = sorted(set(tool) - {"name", "description", "input_schema", "strict", "cache_control", "type"})
        if extra:
            raise Invalid(f"tools.{j}.{extra[0]}: Extra inputs are not permitted")
        names.append(tool["name"])
    choice = body.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
            raise Invalid("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
        if choice["type"] == "tool" and choice.get("name") not in names:
            raise Invalid("tool_choice.name: must name one of the tools")
        if choice["type"] == "none" and "disable_parallel_tool_use" in choice:
            raise Invalid("tool_choice.disable_parallel_tool_use: Extra inputs are not permitted")
        if choice["type"] != "none" and not names:
            raise Invalid("tool_choice may only be specified while providing tools")
    meta = body.get("metadata")
    if meta is not None and (not isinstance(meta, dict) or set(meta) - {"user_id"}):
        raise Invalid("metadata: only user_id is accepted")
    config = body.get("output_config")
    if config is not None:
        if not isinstance(config, dict) or set(config) - {"format", "effort"}:
            raise Invalid("output_config: format and effort only")
        fmt = config.get("format")
        if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "json_schema"
                                or not isinstance(fmt.get("schema"), dict)):
            raise Invalid("output_config.format: {type: json_schema, schema}")
        if config.get("effort") not in (None, "low", "medium", "high", "xhigh", "max"):
            raise Invalid("output_config.effort: low, medium, high, xhigh or max")


def _text_of(content: object) -> str:
    return " ".join(b.get("text", "") for b in _blocks(content) if isinstance(b, dict) and b.get("type") == "text")


def input_tokens(body: dict) -> int:
    words = len(_text_of(body.get("system") or "").split())
    for m in body["messages"]:
        words += len(_text_of(m["content"]).split())
    return max(words, 1)


def reply(body: dict) -> tuple[list[dict], str, str | None]:
    """(content blocks, stop_reason, stop_sequence) for a checked request."""
    model = body["model"]
    users = [m for m in body["messages"] if m["role"] == "user"]
    last = _text_of(users[-1]["content"]) if users else ""
    results = [b for b in _blocks(users[-1]["content"]) if b.get("type") == "tool_result"] if users else []
    if model in ("tool", "text-tool") and results:
        said = [r["content"] if isinstance(r.get("content"), str) else _text_of(r.get("content") or []) for r in results]
        return [{"type": "text", "text": "tool said: " + " ".join(said)}], "end_turn", None
    if model in ("tool", "text-tool"):
        tools = body.get("tools") or []
        choice = body.get("tool_choice") or {}
        tool = next((t for t in tools if t["name"] == choice.get("name")), tools[0] if tools else None)
        if tool is None:
            return [{"type": "text", "text": "no tools to call"}], "end_turn", None
        call = {"type": "tool_use", "id": f"toolu_fake{uuid.uuid4().hex[:10]}", "name": tool["name"],
                "input": example(tool["input_schema"])}
        lead = [{"type": "text", "text": "Let me look."}] if model == "text-tool" else []
        return [*lead, call], "tool_use", None
    if model == "refusal":
        return [{"type": "text", "text": "I can't"}], "refusal", None
    if model == "structured":
        fmt = (body.get("output_config") or {}).get("format") or {}
        return [{"type": "text", "text": json.dumps(example(fmt.get("schema") or {"type": "object"}))}], "end_turn", None
    text, stop, matched = f"echo: {last}", "end_turn", None
    for s in body.get("stop_sequences") or []:
        if s and s in text:
            text, stop, matched = text[:text.index(s)], "stop_sequence", s
            break
    words = text.split(" ")
    if len(words) > body["max_tokens"]:
        text, stop, matched = " ".join(words[:body["max_tokens"]]), "max_tokens", None
    blocks: list[dict] = [{"type": "text", "text": text}]
    if model == "thinking":
        blocks.insert(0, {"type": "thinking", "thinking": "The user wants an echo.", "signature": "sig-fake"})
    return blocks, stop, matched


def _sse(data: dict) -> bytes:
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


def stream_events(body: dict, message: dict) -> list[dict]:
    """The events of `message` (a whole Message) as the API streams it."""
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {**message["usage"], "output_tokens": 1}}
    events: list[dict] = [{"type": "message_start", "message": start}, {"type": "ping"}]
    for i, block in enumerate(message["content"]):
        if block["type"] == "text":
            events.append({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}})
            words = block["text"].split(" ")
            for k, w in enumerate(words):
                events.append({"type": "content_block_delta", "index": i,
                               "delta": {"type": "text_delta", "text": w if k == len(words) - 1 else w + " "}})
        elif block["type"] == "tool_use":
            events.append({"type": "content_block_start", "index": i,
                           "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"],
                                             "input": {}}})
            raw = json.dumps(block["input"])
            for k in range(0, len(raw), 7):
                events.append({"type": "content_block_delta", "index": i,
                               "delta": {"type": "input_json_delta", "partial_json": raw[k:k + 7]}})
        elif block["type"] == "thinking":
            events.append({"type": "content_block_start", "index": i,
                           "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
            events.append({"type": "content_block_delta", "index": i,
                           "delta": {"type": "thinking_delta", "thinking": block["thinking"]}})
            events.append({"type": "content_block_delta", "index": i,
                           "delta": {"type": "signature_delta", "signature": block["signature"]}})
        events.append({"type": "content_block_stop", "index": i})
    events.append({"type": "message_delta",
                   "delta": {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]},
                   "usage": {"output_tokens": message["usage"]["output_tokens"]}})
    events.append({"type": "message_stop"})
    return events


class Base(tornado.web.RequestHandler):
    def fail(self, status: int, message: str) -> None:
        self.set_status(status)
        if status == 429:
            self.set_header("Retry-After", "7")
        self.finish(envelope(status, message))

    def authorised(self) -> bool:
        LAST.clear()
        LAST.update(headers=dict(self.request.headers), raw=self.request.body.decode(errors="replace"))
        key = self.request.headers.get("x-api-key")
        want = self.settings.get("api_key")
        if not key or (want and key != want):
            self.fail(401, "invalid x-api-key")
            return False
        if self.request.headers.get("anthropic-version") != VERSION:
            self.fail(400, f"anthropic-version: header is required and must be {VERSION} on this server")
            return False
        return True


class Messages(Base):
    async def post(self) -> None:
        if not self.authorised():
            return
        try:
            body = json.loads(self.request.body)
        except ValueError:
            self.fail(400, "The request body is not valid JSON.")
            return
        LAST["body"] = body
        try:
            check_body(body)
        except Invalid as exc:
            self.fail(400, str(exc))
            return
        model = body["model"]
        if model == "echo-key" and not body.get("stream"):
            echo_key_401(self)
            return
        if model == "echo-key":
            await self.echo_key_stream()
            return
        if model.startswith("status-"):
            code = int(model.split("-")[1])
            self.fail(code, f"fake upstream says {code}")
            return
        blocks, stop, matched = reply(body)
        out_words = sum(len((b.get("text") or json.dumps(b.get("input", ""))).split()) for b in blocks)
        message = {"id": f"msg_fake{uuid.uuid4().hex[:12]}", "type": "message", "role": "assistant", "model": model,
                   "content": blocks, "stop_reason": stop, "stop_sequence": matched,
                   "usage": {"input_tokens": input_tokens(body), "output_tokens": out_words,
                             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}
        if not body.get("stream"):
            self.set_header("request-id", "req_fake")
            self.finish(message)
            return
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        events = stream_events(body, message)
        if model == "overloaded":
            events = events[:4] + [{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}]
        try:
            for event in events:
                self.write(_sse(event))
                await self.flush()
            self.finish()
        except tornado.iostream.StreamClosedError:
            pass


    async def echo_key_stream(self) -> None:
        key = self.request.headers.get("x-api-key", "")
        self.set_header("Content-Type", "text/event-stream")
        start = {"id": "msg_fakekey", "type": "message", "role": "assistant", "model": "echo-key", "content": [],
                 "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1}}
        for event in ({"type": "message_start", "message": start},
                      {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                      {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "partial "}}):
            self.write(_sse(event))
        await self.flush()
        error = _sse({"type": "error", "error": {"type": "authentication_error", "message": f"invalid x-api-key: {key}"}})
        half = error.index(key.encode()) + len(key) // 2  # the key split across two writes
        self.write(error[:half])
        await self.flush()
        self.write(error[half:])
        self.finish()


def echo_key_401(handler: tornado.web.RequestHandler) -> None:
    key = handler.request.headers.get("x-api-key", "")
    handler.set_status(401)
    handler.finish({"type": "error", "error": {"type": "authentication_error", "message": f"invalid x-api-key: {key}"},
                    "request_id": "req_fakekey"})


class EchoKey(tornado.web.RequestHandler):
    """Every request under /echo-key/v1: the 401 that quotes the key."""

    def get(self, _: str) -> None:
        echo_key_401(self)

    def post(self, _: str) -> None:
        echo_key_401(self)


class Models(Base):
    def get(self) -> None:
        if not self.authorised():
            return
        limit = int(self.get_query_argument("limit", "20"))
        after = self.get_query_argument("after_id", None)
        ids = MODELS[MODELS.index(after) + 1:] if after in MODELS else MODELS
        page = ids[:limit]
        data = [{"type": "model", "id": i, "display_name": i.replace("-", " ").title(),
                 "created_at": "2025-01-01T00:00:00Z"} for i in page]
        self.finish({"data": data, "has_more": len(ids) > limit, "first_id": page[0] if page else None,
                     "last_id": page[-1] if page else None})


class NotFound(Base):
    def get(self, _: str) -> None:
        self.fail(404, f"Not found: {self.request.path}")

    post = get


class Last(tornado.web.RequestHandler):
    def get(self) -> None:
        self.finish(dict(LAST))


def make_app(api_key: str | None) -> tornado.web.Application:
    return tornado.web.Application([(r"/v1/messages", Messages), (r"/v1/models", Models), (r"/_last", Last),
                                    (r"/echo-key/v1/(.*)", EchoKey), (r"/(.*)", NotFound)], api_key=api_key)


if __name__ == "__main__":
    from serve import serve  # (run as a script: this folder is on sys.path)

    serve(lambda args: make_app(args.key))
