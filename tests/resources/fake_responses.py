"""A small real OpenAI Responses API server on 127.0.0.1 for tests (the remote-provider edge
of the `openai_responses` dialect).

Run: python fake_responses.py [--key KEY] [--openapi]  -> prints "PORT <n>" once listening.
It checks the wire format as OpenAI documents it and answers 400 in the OpenAI error envelope
to anything else, so a translation bug fails a test:
  POST /v1/responses only (any other path: 404, other methods: 405, in the envelope, as
  OpenAI answers); with --key, "Authorization: Bearer KEY" (else 401, as OpenAI answers);
  "Content-Type: application/json"; a JSON object body with a string `model` and an
  `input` that is a string or a list of valid items (messages with role user/assistant/
  system/developer and string or part-list content, function_call, function_call_output,
  reasoning); only the documented top-level fields (OpenAPI `CreateResponse`); tools in
  the flat shape {type: "function", name, description?, parameters?, strict?} (a chat-style
  tool nested under "function" is a 400); tool_choice, text.format, max_output_tokens
  (an integer >= 16), stream and store of the documented types.
  With --openapi, every request body is also validated against `CreateResponse` of the
  vendored OpenAPI document (tests/resources/openapi_check.py; slower to start).
Behaviour by model name:
  echo*          reply "echo: <last user text>"; streamed as one output_text delta per word, with
                 the full event sequence (created, in_progress, output_item.added,
                 content_part.added, deltas, output_text.done, content_part.done,
                 output_item.done, completed with usage)
  tool           one function_call of the first tool given, arguments {"city": "Paris"} (or a
                 minimal instance of its parameters schema), streamed as argument deltas in two
                 fragments; once the last input item is a function_call_output, the reply is
                 "tool said: <output>"
  incomplete     "echo: ..." cut short: status incomplete, incomplete_details max_output_tokens
  structured     a minimal JSON instance of text.format's json_schema
  status-NNN     HTTP NNN in the OpenAI error envelope (429 adds Retry-After: 7)
  echo-key       a provider that quotes the key it received: 401 "Incorrect API key provided:
                 <key>"; streamed, response.created and then an `error` event quoting the key,
                 split across two writes
GET /v1/models lists echo, echo-2, tool, incomplete, structured (OpenAI's list shape); under
/echo-key/v1 every request answers the key-quoting 401.
GET /_last returns the last request's headers, body and raw body text.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import tornado.web

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.resources.fake_openai import example  # noqa: E402

LAST: dict = {}
_IDS: dict[int, str] = {}  # id(body) -> its response's id: each request its own, as the real API gives
_SEQ = [0]
# The top-level fields of OpenAPI `CreateResponse` (tests/resources/openapi/openai-openapi.yaml).
FIELDS = {"model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "tools", "tool_choice",
          "text", "stream", "stream_options", "store", "previous_response_id", "user", "safety_identifier",
          "prompt_cache_key", "prompt_cache_retention", "prompt_cache_options", "parallel_tool_calls", "metadata",
          "reasoning", "include", "truncation", "background", "max_tool_calls", "service_tier", "top_logprobs",
          "prompt", "conversation", "context_management", "moderation"}
TOOL_FIELDS = {"type", "name", "description", "parameters", "strict"}
MODELS = ["echo", "echo-2", "tool", "incomplete", "structured"]


class Refused(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str = "invalid_value"):
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code


def envelope(message: str, kind: str = "invalid_request_error", param: str | None = None,
             code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def check_part(part: Any, where: str, role: str) -> None:
    if not isinstance(part, dict):
        raise Refused(f"{where} must be an object.", where)
    kind = part.get("type")
    allowed = ("output_text", "refusal") if role == "assistant" else ("input_text", "input_image", "input_file")
    if kind not in allowed:
        raise Refused(f"Invalid value: '{kind}'. Supported values are: {', '.join(allowed)}.", f"{where}.type")
    if kind in ("input_text", "output_text") and not isinstance(part.get("text"), str):
        raise Refused(f"Missing required parameter: '{where}.text'.", f"{where}.text")
    if kind == "input_image":
        if not (isinstance(part.get("image_url"), str) or isinstance(part.get("file_id"), str)):
            raise Refused(f"{where} needs image_url or file_id.", where)
        if part.get("detail") not in ("auto", "low", "high", "original"):
            raise Refused(f"Invalid value for '{where}.detail'.", f"{where}.detail")


def check_item(item: Any, where: str) -> None:
    if not isinstance(item, dict):
        raise Refused(f"{where} must be an object.", where)
    kind = item.get("type", "message")
    if kind == "message":
        role, content = item.get("role"), item.get("content")
        if role not in ("user", "assistant", "system", "developer"):
            raise Refused(f"Invalid value: '{role}'. Supported values are: 'assistant', 'system', 'developer', "
                          "and 'user'.", f"{where}.role")
        if isinstance(content, list):
            for j, part in enumerate(content):
                check_part(part, f"{where}.content[{j}]", role)
        elif not isinstance(content, str):
            raise Refused(f"Invalid type for '{where}.content': expected a string or an array.", f"{where}.content")
    elif kind == "function_call":
        for key in ("call_id", "name", "arguments"):
            if not isinstance(item.get(key), str):
                raise Refused(f"Missing required parameter: '{where}.{key}'.", f"{where}.{key}")
    elif kind == "function_call_output":
        if not isinstance(item.get("call_id"), str):
            raise Refused(f"Missing required parameter: '{where}.call_id'.", f"{where}.call_id")
        if not isinstance(item.get("output"), (str, list)):
            raise Refused(f"Invalid type for '{where}.output'.", f"{where}.output")
    elif kind != "reasoning":
        raise Refused(f"Invalid value: '{kind}' for {where}.type.", f"{where}.type")


def check_body(body: Any) -> None:
    if not isinstance(body, dict):
        raise Refused("The body must be a JSON object.")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise Refused(f"Unknown parameter: '{unknown[0]}'.", unknown[0], code="unknown_parameter")
    if not isinstance(body.get("model"), str):
        raise Refused("Missing required parameter: 'model'.", "model", code="missing_required_parameter")
    inp = body.get("input")
    if isinstance(inp, list):
        for i, item in enumerate(inp):
            check_item(item, f"input[{i}]")
    elif not isinstance(inp, str):
        raise Refused("Missing required parameter: 'input'.", "input", code="missing_required_parameter")
    for i, tool in enumerate(body.get("tools") or []):
        if not isinstance(tool, dict) or tool.get("type") != "function" or "function" in tool:
            raise Refused(f"Missing required parameter: 'tools[{i}].name'.", f"tools[{i}].name",
                          code="missing_required_parameter")
        if not isinstance(tool.get("name"), str) or set(tool) - TOOL_FIELDS:
            raise Refused(f"Invalid tool 'tools[{i}]'.", f"tools[{i}]")
        if not isinstance(tool.get("parameters") or {}, dict) or tool.get("strict") not in (None, True, False):
            raise Refused(f"Invalid tool 'tools[{i}]'.", f"tools[{i}]")
    choice = body.get("tool_choice")
    if choice is not None and choice not in ("auto", "none", "required") and not (
            isinstance(choice, dict) and choice.get("type") in ("function", "allowed_tools")
            and (choice["type"] != "function" or isinstance(choice.get("name"), str)) and "function" not in choice):
        raise Refused("Invalid value for 'tool_choice'.", "tool_choice")
    fmt = (body.get("text") or {}).get("format")
    if fmt is not None and not (fmt.get("type") in ("text", "json_object") or (
            fmt.get("type") == "json_schema" and isinstance(fmt.get("name"), str) and isinstance(fmt.get("schema"), dict))):
        raise Refused("Invalid value for 'text.format'.", "text.format")
    mot = body.get("max_output_tokens")
    if mot is not None and (not isinstance(mot, int) or mot < 16):
        raise Refused("Invalid 'max_output_tokens': integer below minimum value 16.", "max_output_tokens",
                      code="integer_below_min_value")
    for key in ("stream", "store", "parallel_tool_calls"):
        if body.get(key) is not None and not isinstance(body[key], bool):
            raise Refused(f"Invalid type for '{key}': expected a boolean.", key)


def last_user_text(items: list) -> str:
    for item in reversed(items):
        if item.get("type", "message") == "message" and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            return " ".join(p.get("text", "") for p in content if p.get("type") == "input_text")
    return ""


def response(body: dict, output: list, status: str = "completed", words: int = 1) -> dict:
    """The response object, with the request's settings echoed as OpenAI does."""
    text = body.get("text") or {}
    return {"id": _IDS[id(body)], "object": "response", "created_at": int(time.time()), "status": status,
            "completed_at": int(time.time()) if status == "completed" else None, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
            "model": body["model"], "output": output, "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"), "reasoning": None,
            "store": body.get("store", True), "temperature": body.get("temperature", 1.0),
            "text": {"format": text.get("format") or {"type": "text"}}, "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [], "top_p": body.get("top_p", 1.0), "truncation": "disabled",
            "metadata": body.get("metadata") or {},
            "usage": {"input_tokens": 5, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                      "output_tokens": words, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": 5 + words}}


def message(text: str, status: str = "completed") -> dict:
    return {"type": "message", "id": "msg_fake", "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def call(tool: dict, arguments: str, status: str = "completed") -> dict:
    return {"type": "function_call", "id": "fc_fake", "call_id": "call_fake", "name": tool["name"],
            "arguments": arguments, "status": status}


def tool_arguments(tool: dict) -> str:
    params = tool.get("parameters") or {}
    if not params.get("properties") or "city" in params["properties"]:
        return json.dumps({"city": "Paris"})
    return json.dumps(example(params))


def answer(body: dict) -> tuple[str, str]:
    """What the model says: ("text", words) or ("call", arguments)."""
    items = body["input"] if isinstance(body["input"], list) else [{"role": "user", "content": body["input"]}]
    model = body["model"]
    if model == "tool" and items and items[-1].get("type") == "function_call_output":
        output = items[-1]["output"]
        said = output if isinstance(output, str) else " ".join(p.get("text", "") for p in output)
        return "text", f"tool said: {said}"
    if model == "tool" and body.get("tools"):
        return "call", tool_arguments(body["tools"][0])
    if model == "structured":
        fmt = (body.get("text") or {}).get("format") or {}
        return "text", json.dumps(example(fmt.get("schema") or {"type": "object"}))
    text = "echo: " + last_user_text(items)
    if model == "incomplete":
        text = " ".join(text.split(" ")[:2])
    return "text", text


class Base(tornado.web.RequestHandler):
    def fail(self, status: int, payload: dict) -> None:
        self.set_status(status)
        self.finish(payload)

    def authorised(self) -> bool:
        key = self.settings.get("api_key")
        if key and self.request.headers.get("Authorization") != f"Bearer {key}":
            self.fail(401, envelope("Incorrect API key provided.", code="invalid_api_key"))
            return False
        return True

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.finish(envelope(self._reason, "invalid_request_error"))


def received_key(handler: tornado.web.RequestHandler) -> str:
    return handler.request.headers.get("Authorization", "").removeprefix("Bearer ")


def key_error(key: str) -> dict:
    return envelope(f"Incorrect API key provided: {key}. You can find your API key at https://example.invalid/keys.",
                    code="invalid_api_key")


class EchoKey(Base):
    def get(self, _: str) -> None:
        self.fail(401, key_error(received_key(self)))

    def post(self, _: str) -> None:
        self.fail(401, key_error(received_key(self)))


class Models(Base):
    def get(self) -> None:
        if self.authorised():
            self.finish({"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "fake"}
                                                    for m in MODELS]})


class Last(tornado.web.RequestHandler):
    def get(self) -> None:
        self.finish(LAST)


class NotFound(Base):
    def prepare(self) -> None:
        LAST.clear()
        LAST.update(headers=dict(self.request.headers), body=None, raw=self.request.body.decode(errors="replace"),
                    path=self.request.path)
        self.fail(404, envelope(f"Invalid URL ({self.request.method} {self.request.path})"))


class Responses(Base):
    async def post(self) -> None:
        raw = self.request.body.decode(errors="replace")
        LAST.clear()
        LAST.update(headers=dict(self.request.headers), body=None, raw=raw, path=self.request.path)
        try:
            body = json.loads(raw)
        except ValueError:
            self.fail(400, envelope("We could not parse the JSON body of your request."))
            return
        LAST["body"] = body
        _SEQ[0] += 1
        _IDS[id(body)] = f"resp_fake{_SEQ[0]}"  # set anew per request: a reused id() gets a fresh id
        if not self.authorised():
            return
        try:
            if not self.request.headers.get("Content-Type", "").startswith("application/json"):
                raise Refused("The body must be sent as Content-Type: application/json.")
            check_body(body)
            if self.settings.get("openapi"):
                from tests.resources.openapi_check import validate
                try:
                    validate("CreateResponse", body, closed=True)
                except AssertionError as exc:
                    raise Refused(f"Does not match OpenAPI CreateResponse: {exc}") from exc
        except Refused as exc:
            self.fail(exc.status, envelope(exc.message, param=exc.param, code=exc.code))
            return
        model = body["model"]
        if model.startswith("status-"):
            code = int(model.split("-")[1])
            if code == 429:
                self.set_header("Retry-After", "7")
            self.fail(code, envelope(f"fake upstream says {code}", "server_error"))
            return
        if model == "echo-key" and not body.get("stream"):
            self.fail(401, key_error(received_key(self)))
            return
        kind, said = answer(body)
        if body.get("stream"):
            await self.stream(body, kind, said)
            return
        status = "incomplete" if model == "incomplete" else "completed"
        output = [call(body["tools"][0], said)] if kind == "call" else [message(said, status)]
        self.finish(response(body, output, status, len(said.split(" "))))

    async def stream(self, body: dict, kind: str, said: str) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        seq = {"n": 0}

        def event(data: dict) -> bytes:
            data["sequence_number"] = seq["n"]
            seq["n"] += 1
            return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()

        status = "incomplete" if body["model"] == "incomplete" else "completed"
        start = response(body, [], "in_progress")
        start.pop("usage")
        self.write(event({"type": "response.created", "response": start}))
        self.write(event({"type": "response.in_progress", "response": start}))
        if body["model"] == "echo-key":
            key = received_key(self)
            frame = event({"type": "error", "code": "invalid_api_key", "message": f"Incorrect API key provided: {key}",
                           "param": None})
            half = frame.index(key.encode()) + len(key) // 2  # the key split across two writes
            self.write(frame[:half])
            await self.flush()
            self.write(frame[half:])
            self.finish()
            return
        if kind == "call":
            tool = body["tools"][0]
            self.write(event({"type": "response.output_item.added", "output_index": 0, "item": call(tool, "", "in_progress")}))
            cut = len(said) // 2
            for fragment in (said[:cut], said[cut:]):
                self.write(event({"type": "response.function_call_arguments.delta", "item_id": "fc_fake",
                                  "output_index": 0, "delta": fragment}))
                await self.flush()
            self.write(event({"type": "response.function_call_arguments.done", "item_id": "fc_fake", "output_index": 0,
                              "name": tool["name"], "arguments": said}))
            self.write(event({"type": "response.output_item.done", "output_index": 0, "item": call(tool, said)}))
            output = [call(tool, said)]
        else:
            where = {"item_id": "msg_fake", "output_index": 0, "content_index": 0}
            empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            added = message("", "in_progress")
            added["content"] = []
            self.write(event({"type": "response.output_item.added", "output_index": 0, "item": added}))
            self.write(event({"type": "response.content_part.added", **where, "part": empty}))
            words = said.split(" ")
            for i, w in enumerate(words):
                self.write(event({"type": "response.output_text.delta", **where,
                                  "delta": w if i == len(words) - 1 else w + " ", "logprobs": []}))
                await self.flush()
            self.write(event({"type": "response.output_text.done", **where, "text": said, "logprobs": []}))
            self.write(event({"type": "response.content_part.done", **where, "part": {**empty, "text": said}}))
            self.write(event({"type": "response.output_item.done", "output_index": 0, "item": message(said, status)}))
            output = [message(said, status)]
        final = response(body, output, status, len(said.split(" ")))
        self.write(event({"type": "response.completed" if status == "completed" else "response.incomplete",
                          "response": final}))
        self.finish()


def make_app(api_key: str | None, openapi: bool = False) -> tornado.web.Application:
    return tornado.web.Application(
        [(r"/v1/responses", Responses), (r"/v1/models", Models), (r"/echo-key/v1/(.*)", EchoKey),
         (r"/_last", Last)], api_key=api_key, openapi=openapi, default_handler_class=NotFound)


def _build(args: Any) -> tornado.web.Application:
    if args.openapi:
        from tests.resources.openapi_check import validate
        validate("CreateResponse", {"model": "m", "input": "warm up"})  # load the document before listening
    return make_app(args.key, args.openapi)


if __name__ == "__main__":
    from serve import serve  # (run as a script: this folder is on sys.path)

    serve(_build, flags=[("--openapi", {"action": "store_true",
                                        "help": "also validate bodies against OpenAPI CreateResponse"})])
