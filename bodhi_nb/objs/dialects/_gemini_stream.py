"""Private to gemini.py: what a Gemini answer is in chat, both ways, the two stream classes, and
the client side's request (`request_to_chat`, a Gemini body as a chat body).

Kept apart from the upstream request translation (gemini.py) because the non-streamed answers
and the streams share every rule here: which finish reason is which, how usage is counted, what
a `functionCall` part is as a chat tool call, and how Google's error envelope maps to OpenAI's.
Pure: no I/O.

- Finish reasons (Candidate.FinishReason): MAX_TOKENS is `length`; SAFETY, RECITATION,
  BLOCKLIST, PROHIBITED_CONTENT, SPII, the IMAGE_* filters, MODEL_ARMOR and JAILBREAK are
  `content_filter` (as is a prompt blocked by `promptFeedback.blockReason`, with empty
  content); every other reason (STOP, OTHER, LANGUAGE, MALFORMED_FUNCTION_CALL, ...) is
  `tool_calls` when the candidate called a function, else `stop`.
- Usage: Gemini counts thinking apart (`thoughtsTokenCount`); chat's `completion_tokens`
  includes it (`completion_tokens_details.reasoning_tokens`), as OpenAI counts reasoning.
- Gemini 3 signs its function calls (`thoughtSignature`) and refuses a history that lost the
  signature. A chat tool call carries it as `extra_content.google.thought_signature`, the
  field Google's own OpenAI-compatible endpoint uses, so a client that sends the assistant
  message back as it got it keeps the signature.
- Dropped from answers (chat has no place for them): `thought` parts (thought summaries, only
  sent when asked for), thought signatures on text parts, parts chat cannot carry (inline
  images, executable code: never asked for), safety and citation metadata, `modelVersion`
  and `responseId` (the chat answer names the model the client asked for and gets its own id).
- A stream with no finish reason at all ends as `stop`.

`request_to_chat` inverts gemini.chat_to_request. Its chat body has no `model` and no `stream`:
Gemini carries both in the URL (gemini.client_route reads them). A user content's
`functionResponse` parts become tool messages (paired with the call by `id`, else by name and
order) ahead of its other parts; `responseSchema` and `parameters` (Gemini's OpenAPI Schema)
become JSON Schema (lower-case types, `nullable` as a "null" type). Dropped: safetySettings
(chat has no place for it), `thought` parts, a declaration's response schema. 400s: topK,
responseLogprobs/logprobs, thinkingConfig and any other generationConfig field
(`unsupported_parameter`), cachedContent and unknown fields (`unsupported_parameter`),
non-function tools (`unsupported_tool_type`), mode VALIDATED (`unsupported_tool_choice`),
parts chat cannot carry (`unsupported_content_part`), roles other than user/model
(`unsupported_role`), a result with no call (`unknown_tool_call_id`).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from ..errors import InvalidRequestError, UpstreamError
from .base import SseEvent

__all__ = ["ChatToEvents", "EventsToChat", "call_part", "finish_to_chat", "finish_to_gemini", "google_error",
           "google_status", "new_id", "openai_error", "parts_to_message", "request_to_chat", "tool_call",
           "usage_to_chat", "usage_to_gemini"]

_FILTERED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
                       "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "MODEL_ARMOR", "JAILBREAK"})
_TO_GEMINI = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "function_call": "STOP",
              "content_filter": "SAFETY"}
# google.rpc.Code by HTTP status, as https://ai.google.dev/gemini-api/docs/troubleshooting lists them.
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 501: "UNIMPLEMENTED",
           503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
# Google's status -> OpenAI error (type, code).
_OPENAI = {"INVALID_ARGUMENT": ("invalid_request_error", "invalid_argument"),
           "FAILED_PRECONDITION": ("invalid_request_error", "failed_precondition"),
           "OUT_OF_RANGE": ("invalid_request_error", "out_of_range"),
           "UNAUTHENTICATED": ("authentication_error", "invalid_api_key"),
           "PERMISSION_DENIED": ("permission_error", "permission_denied"),
           "NOT_FOUND": ("invalid_request_error", "not_found"),
           "RESOURCE_EXHAUSTED": ("rate_limit_error", "rate_limit_exceeded"),
           "CANCELLED": ("api_error", "cancelled"), "INTERNAL": ("api_error", "internal_error"),
           "UNAVAILABLE": ("api_error", "service_unavailable"), "DEADLINE_EXCEEDED": ("api_error", "timeout")}
_HTTP_BY_TYPE = {"invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
                 "not_found_error": 404, "rate_limit_error": 429, "upstream_error": 502}


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def google_status(status: int) -> str:
    """The google.rpc status name Google answers with this HTTP status."""
    if status in _STATUS:
        return _STATUS[status]
    return "INVALID_ARGUMENT" if 400 <= status < 500 else "INTERNAL"


def openai_error(status: int, err: dict[str, Any]) -> dict[str, Any]:
    """Google's `error` object ({code, message, status, details}) as an OpenAI error object."""
    given = err.get("status")
    gstatus = given if isinstance(given, str) else google_status(status)
    kind, code = _OPENAI.get(gstatus, ("invalid_request_error" if 400 <= status < 500 else "api_error",
                                       gstatus.lower()))
    details = err.get("details")
    if isinstance(details, list) and any(isinstance(d, dict) and d.get("reason") == "API_KEY_INVALID"
                                         for d in details):
        kind, code = "authentication_error", "invalid_api_key"
    return {"message": str(err.get("message", "")), "type": kind, "param": None, "code": code}


def google_error(error: dict[str, Any], status: int | None = None) -> dict[str, Any]:
    """An OpenAI error object (or envelope) as Google's envelope; the status from its type if not given."""
    inner = error.get("error")
    err: dict[str, Any] = inner if isinstance(inner, dict) else error
    if status is None:
        status = 429 if err.get("code") == "rate_limit_exceeded" else _HTTP_BY_TYPE.get(str(err.get("type")), 500)
    return {"error": {"code": status, "message": str(err.get("message", "")), "status": google_status(status)}}


def finish_to_chat(reason: str | None, called: bool) -> str:
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _FILTERED:
        return "content_filter"
    return "tool_calls" if called else "stop"


def finish_to_gemini(reason: str | None) -> str:
    return _TO_GEMINI.get(reason or "stop", "OTHER")


def usage_to_chat(meta: Any) -> dict[str, Any] | None:
    if not isinstance(meta, dict):
        return None
    prompt = int(meta.get("promptTokenCount") or 0)
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    completion = int(meta.get("candidatesTokenCount") or 0) + thoughts
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": int(meta.get("totalTokenCount") or prompt + completion)}
    if thoughts:
        usage["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    if meta.get("cachedContentTokenCount"):
        usage["prompt_tokens_details"] = {"cached_tokens": int(meta["cachedContentTokenCount"])}
    return usage


def usage_to_gemini(usage: Any) -> dict[str, Any] | None:
    if not isinstance(usage, dict):
        return None
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    thoughts = int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    meta = {"promptTokenCount": prompt, "candidatesTokenCount": completion - thoughts,
            "totalTokenCount": int(usage.get("total_tokens") or prompt + completion)}
    if thoughts:
        meta["thoughtsTokenCount"] = thoughts
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    if cached:
        meta["cachedContentTokenCount"] = int(cached)
    return meta


def tool_call(part: dict[str, Any]) -> dict[str, Any]:
    """A `functionCall` part as a chat tool call (Gemini's id when it gave one, else a new one)."""
    fc = part["functionCall"]
    call: dict[str, Any] = {"id": fc.get("id") or new_id("call_"), "type": "function",
                            "function": {"name": fc.get("name", ""),
                                         "arguments": json.dumps(fc.get("args") or {}, ensure_ascii=False,
                                                               separators=(",", ":"))}}
    if part.get("thoughtSignature"):
        call["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
    return call


def call_part(tc: dict[str, Any], *, with_id: bool) -> dict[str, Any]:
    """A chat tool call as a `functionCall` part; ValueError when its arguments are not a JSON object."""
    fn = tc.get("function") or {}
    args = json.loads(fn.get("arguments") or "{}")
    if not isinstance(args, dict):
        raise ValueError("arguments is not a JSON object")
    fc: dict[str, Any] = {"name": fn.get("name", ""), "args": args}
    if with_id and tc.get("id"):
        fc["id"] = tc["id"]
    part: dict[str, Any] = {"functionCall": fc}
    sig = ((tc.get("extra_content") or {}).get("google") or {}).get("thought_signature")
    if sig:
        part["thoughtSignature"] = sig
    return part


def parts_to_message(parts: list[Any]) -> tuple[str | None, list[dict[str, Any]]]:
    """The text and tool calls of a candidate's parts (thought parts skipped)."""
    texts = [p["text"] for p in parts if isinstance(p, dict) and "text" in p and not p.get("thought")]
    calls = [tool_call(p) for p in parts if isinstance(p, dict) and isinstance(p.get("functionCall"), dict)]
    return ("".join(texts) if texts else (None if calls else "")), calls


class EventsToChat:
    """Upstream side: each `streamGenerateContent?alt=sse` event is a partial GenerateContentResponse
    (text arrives in pieces, a `functionCall` part whole); the finish reason and usage come last."""

    def __init__(self, model: str) -> None:
        self._model, self._id, self._created = model, new_id("chatcmpl-"), int(time.time())
        self._started: set[int] = set()
        self._calls: dict[int, int] = {}
        self._finish: dict[int, str] = {}
        self._usage: Any = None

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model,
                "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}

    def feed(self, event: SseEvent) -> list[dict[str, Any]]:
        data = event.data
        if isinstance(data.get("error"), dict):
            code = data["error"].get("code")
            err = openai_error(code if isinstance(code, int) else 500, data["error"])
            raise UpstreamError(f"Gemini failed mid-stream: {err['message']}", code=err["code"])
        if data.get("usageMetadata"):
            self._usage = data["usageMetadata"]
        candidates = data.get("candidates") or []
        if not candidates and (data.get("promptFeedback") or {}).get("blockReason"):
            self._finish[0] = "SAFETY"
        out = []
        for cand in candidates:
            i = int(cand.get("index") or 0)
            text, calls = parts_to_message((cand.get("content") or {}).get("parts") or [])
            delta: dict[str, Any] = {} if i in self._started else {"role": "assistant"}
            if text:
                delta["content"] = text
            if calls:
                n = self._calls.get(i, 0)
                delta["tool_calls"] = [{"index": n + k, **c} for k, c in enumerate(calls)]
                self._calls[i] = n + len(calls)
            if cand.get("finishReason"):
                self._finish[i] = cand["finishReason"]
            if text or calls:
                self._started.add(i)
                out.append(self._chunk(i, delta))
        return out

    def end(self) -> list[dict[str, Any]]:
        out = []
        for i, reason in sorted((self._finish or {0: "STOP"}).items()):
            delta = {} if i in self._started else {"role": "assistant", "content": ""}
            out.append(self._chunk(i, delta, finish_to_chat(reason, self._calls.get(i, 0) > 0)))
        usage = usage_to_chat(self._usage)
        if usage is not None:
            out.append({"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                        "model": self._model, "choices": [], "usage": usage})
        return out


class ChatToEvents:
    """Client side: chat chunks as `streamGenerateContent?alt=sse` events. Text goes out as it
    comes; a tool call's argument fragments are gathered and sent whole as one `functionCall`
    part with the finish reason and usage, in the last event (as Gemini sends them)."""

    def __init__(self, model: str) -> None:
        self._model, self._id = model, new_id("resp-")
        self._calls: dict[tuple[int, int], dict[str, Any]] = {}
        self._finish: dict[int, str] = {}
        self._usage: Any = None

    def _event(self, candidates: list[dict[str, Any]], usage: Any = None) -> SseEvent:
        data: dict[str, Any] = {"candidates": candidates}
        meta = usage_to_gemini(usage)
        if meta is not None:
            data["usageMetadata"] = meta
        return SseEvent(None, {**data, "modelVersion": self._model, "responseId": self._id})

    def feed(self, chunk: dict[str, Any]) -> list[SseEvent]:
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        out = []
        for choice in chunk.get("choices") or []:
            i, delta = int(choice.get("index") or 0), choice.get("delta") or {}
            for tc in delta.get("tool_calls") or []:
                buf = self._calls.setdefault((i, int(tc.get("index") or 0)), {"function": {"arguments": ""}})
                buf["id"] = tc.get("id") or buf.get("id")
                buf["extra_content"] = tc.get("extra_content") or buf.get("extra_content")
                fn = tc.get("function") or {}
                buf["function"]["name"] = fn.get("name") or buf["function"].get("name")
                buf["function"]["arguments"] += fn.get("arguments") or ""
            text = delta.get("content") or delta.get("refusal")
            if text:
                out.append(self._event([{"content": {"role": "model", "parts": [{"text": text}]}, "index": i}]))
            if choice.get("finish_reason"):
                self._finish[i] = choice["finish_reason"]
        return out

    def end(self) -> list[SseEvent]:
        candidates = []
        for i in sorted(set(self._finish) | {i for i, _ in self._calls} or {0}):
            calls = [self._calls[k] for k in sorted(self._calls) if k[0] == i]
            try:
                parts = [call_part(c, with_id=True) for c in calls]
            except ValueError:
                return self.error({"message": "The model's tool call arguments are not a JSON object.",
                                   "type": "upstream_error"})
            candidates.append({"content": {"role": "model", "parts": parts or [{"text": ""}]},
                               "finishReason": finish_to_gemini(self._finish.get(i)), "index": i})
        return [self._event(candidates, self._usage)]

    def error(self, error: dict[str, Any]) -> list[SseEvent]:
        return [SseEvent(None, google_error(error))]


_BODY = frozenset({"contents", "systemInstruction", "generationConfig", "tools", "toolConfig", "safetySettings"})
_CONFIG = {"maxOutputTokens": "max_tokens", "temperature": "temperature", "topP": "top_p", "seed": "seed",
           "stopSequences": "stop", "presencePenalty": "presence_penalty", "frequencyPenalty": "frequency_penalty"}
_FORMATS = {"audio/wav": "wav", "audio/mp3": "mp3", "audio/mpeg": "mp3"}


def _bad(message: str, code: str, param: str | None = None) -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code=code)


def _json_schema(schema: Any) -> Any:
    """Gemini's OpenAPI-style Schema (upper-case types, `nullable`) as JSON Schema."""
    if isinstance(schema, list):
        return [_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: ({n: _json_schema(v) for n, v in val.items()} if k == "properties" and isinstance(val, dict)
               else _json_schema(val) if k in ("items", "anyOf") else val)
           for k, val in schema.items() if k not in ("nullable", "propertyOrdering", "example")}
    kind = out.get("type")
    if isinstance(kind, str):
        out["type"] = [kind.lower(), "null"] if schema.get("nullable") else kind.lower()
    return out


def _media(part: dict[str, Any], at: str) -> dict[str, Any]:
    if isinstance(part.get("inlineData"), dict):
        mime, data = str(part["inlineData"].get("mimeType", "")), str(part["inlineData"].get("data", ""))
        if mime in _FORMATS:
            return {"type": "input_audio", "input_audio": {"data": data, "format": _FORMATS[mime]}}
        url = f"data:{mime};base64,{data}"
        return ({"type": "image_url", "image_url": {"url": url}} if mime.startswith("image/")
                else {"type": "file", "file": {"file_data": url}})
    fd = part.get("fileData")
    fd = fd if isinstance(fd, dict) else {}
    if str(fd.get("fileUri", "")).startswith("https://") and str(fd.get("mimeType") or "image/").startswith("image/"):
        return {"type": "image_url", "image_url": {"url": fd["fileUri"]}}
    raise _bad(f"{at}: this part has no equivalent in chat", "unsupported_content_part", at)


def _tool_choice(config: dict[str, Any]) -> Any:
    fcc = config.get("functionCallingConfig") or {}
    mode, names = fcc.get("mode", "AUTO"), list(fcc.get("allowedFunctionNames") or [])
    if mode in ("AUTO", "NONE") or (mode == "ANY" and not names):
        return {"AUTO": "auto", "NONE": "none", "ANY": "required"}[mode]
    if mode == "ANY" and len(names) == 1:
        return {"type": "function", "function": {"name": names[0]}}
    if mode == "ANY":
        return {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
            {"type": "function", "function": {"name": n}} for n in names]}}
    raise _bad(f"toolConfig: mode {mode!r} has no equivalent in chat", "unsupported_tool_choice", "toolConfig")


def _chat_config(config: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key in _CONFIG:
            out[_CONFIG[key]] = value
        elif key == "candidateCount":
            out["n"] = value
        elif key not in ("responseMimeType", "responseSchema", "responseJsonSchema"):
            raise _bad(f"generationConfig.{key} has no equivalent in chat", "unsupported_parameter",
                       f"generationConfig.{key}")
    schema = config.get("responseJsonSchema", _json_schema(config.get("responseSchema")))
    if schema is not None:
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
    elif config.get("responseMimeType") == "application/json":
        out["response_format"] = {"type": "json_object"}
    elif config.get("responseMimeType") not in (None, "text/plain"):
        raise _bad("generationConfig.responseMimeType: only text/plain and application/json translate",
                   "unsupported_response_format", "generationConfig.responseMimeType")
    return out


def _result_text(response: Any) -> str:
    if isinstance(response, dict) and len(response) == 1 and isinstance(response.get("result"), str):
        return str(response["result"])
    return json.dumps(response, ensure_ascii=False)


def _objects(value: Any, where: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise _bad(f"{where} must be a list of objects", "invalid_request", where)
    return value


def request_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A `generateContent` body as a chat body, without `model` and `stream` (see the docstring)."""
    for key in body:
        if key not in _BODY:
            raise _bad(f"{key}: this field has no equivalent in chat", "unsupported_parameter", key)
    for key in ("systemInstruction", "generationConfig", "toolConfig"):
        if not isinstance(body.get(key) or {}, dict):
            raise _bad(f"{key} must be an object", "invalid_request", key)
    messages: list[dict[str, Any]] = []
    if body.get("systemInstruction"):
        parts = _objects(body["systemInstruction"].get("parts"), "systemInstruction.parts")
        texts = [p["text"] for p in parts if isinstance(p.get("text"), str)]
        if len(texts) != len(parts):
            raise _bad("systemInstruction: text parts only", "unsupported_content_part", "systemInstruction")
        messages.append({"role": "system", "content": "\n".join(texts)})
    pending: list[tuple[str, str]] = []  # (id, name) of the calls not answered yet
    for i, content in enumerate(_objects(body.get("contents"), "contents")):
        role, parts, calls, results = content.get("role") or "user", [], [], []
        if role not in ("user", "model", "function"):
            raise _bad(f"contents[{i}].role {role!r} has no equivalent in chat", "unsupported_role",
                       f"contents[{i}].role")
        for j, part in enumerate(_objects(content.get("parts"), f"contents[{i}].parts")):
            at = f"contents[{i}].parts[{j}]"
            if part.get("thought"):
                continue
            if isinstance(part.get("text"), str):
                parts.append({"type": "text", "text": part["text"]})
            elif role == "model" and isinstance(part.get("functionCall"), dict):
                calls.append(tool_call(part))
                pending.append((calls[-1]["id"], calls[-1]["function"]["name"]))
            elif role != "model" and isinstance(part.get("functionResponse"), dict):
                fr = part["functionResponse"]
                match = next((c for c in pending if c[0] == fr.get("id")), None) or next(
                    (c for c in pending if c[1] == fr.get("name")), None)
                if match is None:
                    raise _bad(f"{at}: a functionResponse with no earlier functionCall", "unknown_tool_call_id", at)
                pending.remove(match)
                results.append({"role": "tool", "tool_call_id": match[0], "content": _result_text(fr.get("response"))})
            elif role != "model":
                parts.append(_media(part, at))
            else:
                raise _bad(f"{at}: this part has no equivalent in chat", "unsupported_content_part", at)
        if role == "model":
            text = "".join(p["text"] for p in parts)
            messages.append({"role": "assistant", "content": text or None, **({"tool_calls": calls} if calls else {})})
            continue
        messages += results
        if parts:
            one_text = len(parts) == 1 and parts[0]["type"] == "text"
            messages.append({"role": "user", "content": parts[0]["text"] if one_text else parts})
    chat: dict[str, Any] = {"messages": messages, **_chat_config(body.get("generationConfig") or {})}
    tools = []
    for j, tool in enumerate(_objects(body.get("tools"), "tools")):
        if set(tool) != {"functionDeclarations"}:
            raise _bad(f"tools[{j}]: only functionDeclarations translate to chat", "unsupported_tool_type",
                       f"tools[{j}]")
        for d in _objects(tool["functionDeclarations"], f"tools[{j}].functionDeclarations"):
            params = d.get("parametersJsonSchema", _json_schema(d.get("parameters")))
            fn = {"name": d.get("name"), **({"description": d["description"]} if d.get("description") else {}),
                  **({"parameters": params} if params is not None else {})}
            tools.append({"type": "function", "function": fn})
    if tools:
        chat["tools"] = tools
    if body.get("toolConfig"):
        chat["tool_choice"] = _tool_choice(body["toolConfig"])
    return chat
