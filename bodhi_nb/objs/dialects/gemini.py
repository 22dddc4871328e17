"""The Gemini API dialect (`api_format: "gemini"`): `generateContent` and its SSE stream, to
and from OpenAI chat completions (base.py), so an API model on generativelanguage.googleapis.com
is served through the gateway's chat surface. Pure: no I/O.

Wire (https://ai.google.dev/api/generate-content, /api/models, /gemini-api/docs/troubleshooting):
`POST {base_url}/models/{model}:generateContent`, or `:streamGenerateContent?alt=sse` (each SSE
`data:` a partial GenerateContentResponse); `GET {base_url}/models?pageSize=1000`; the key in
the `x-goog-api-key` header, never in the URL. Bodies are the REST JSON (camelCase).

Chat -> Gemini (`chat_to_request`):
- system and developer messages -> `systemInstruction` (all of them, in order, wherever they
  stand: Gemini has one system instruction); user -> role `user`; assistant -> role `model`;
  tool -> a `user` content with a `functionResponse` part, its name recovered from the earlier
  assistant tool call; a result that is not a JSON object becomes `{"result": ...}`. Consecutive
  contents of one role merge; an assistant message with nothing in it is left out.
- content parts: text; images as `inlineData` (data: URLs) or `fileData` (https URLs, the MIME
  type guessed from the path); `input_audio` (wav, mp3) and `file` data as `inlineData`.
- max_tokens / max_completion_tokens (the smaller) -> maxOutputTokens; temperature, top_p,
  stop, seed, presence_penalty, frequency_penalty -> their generationConfig fields.
- tools -> one `functionDeclarations` tool, parameters as `parametersJsonSchema`; tool_choice
  auto/none/required/one function/allowed_tools -> `toolConfig.functionCallingConfig`.
- response_format json_object -> responseMimeType application/json; json_schema -> that plus
  `responseJsonSchema`. Schemas are cut to the JSON Schema subset Gemini documents for
  `responseJsonSchema` (other keywords removed: Gemini does not enforce them; `const` becomes
  a one-value enum; a one-member `allOf` is merged; a `$ref` keeps only its `$` keys, which
  Gemini requires); function parameters get the same treatment.
- dropped, Gemini having no place for them: stream and stream_options (the URL says stream;
  Gemini always reports usage), user, metadata, store, service_tier, safety_identifier,
  prompt_cache_key, json_schema.name/description/strict, function.strict, image detail,
  message names, tool call ids (Gemini pairs results by name and order).
- 400s (InvalidRequestError codes): n > 1 `unsupported_n`; logprobs `unsupported_logprobs`;
  logit_bias `unsupported_logit_bias`; parallel_tool_calls false `unsupported_parallel_tool_calls`;
  non-function tools `unsupported_tool_type`; other tool_choice `unsupported_tool_choice`;
  functions/function_call `unsupported_functions`; other response formats
  `unsupported_response_format`; audio out `unsupported_audio`; prediction, web_search_options,
  reasoning_effort, any unknown field `unsupported_parameter`; other parts
  `unsupported_content_part`; http/odd image URLs `unsupported_image_url`; other roles
  `unsupported_role`; a tool result with no earlier call `unknown_tool_call_id`; arguments that
  are not a JSON object `invalid_tool_arguments`; only system messages `no_contents`.

Gemini -> chat (client side: `request_to_chat`, answers and streams) is in _gemini_stream.py.
"""

from __future__ import annotations

import json
import mimetypes
import re
import time
from typing import Any
from urllib.parse import quote, urlparse

from ..errors import InvalidRequestError, UpstreamError
from . import _gemini_stream as _s
from ._gemini_stream import request_to_chat
from .base import UpstreamWire

__all__ = ["NAME", "chat_to_events", "chat_to_request", "chat_to_response", "client_route", "clean_schema",
           "error_envelope", "events_to_chat", "models_wire", "parse_models", "request_to_chat", "response_to_chat",
           "upstream_error", "wire"]

NAME = "gemini"
_DROPPED = frozenset({"model", "stream", "stream_options", "user", "metadata", "store", "service_tier",
                      "safety_identifier", "prompt_cache_key"})
_MAPPED = frozenset({"messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "seed",
                     "presence_penalty", "frequency_penalty", "n", "logprobs", "top_logprobs", "logit_bias", "tools",
                     "tool_choice", "parallel_tool_calls", "response_format", "modalities", "audio"})
_SCHEMA_KEYS = frozenset({"$id", "$defs", "$ref", "$anchor", "type", "format", "title", "description", "enum",
                          "items", "prefixItems", "minItems", "maxItems", "minimum", "maximum", "anyOf", "oneOf",
                          "properties", "additionalProperties", "required", "propertyOrdering"})
_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+);base64,(.*)", re.DOTALL)
_AUDIO = {"wav": "audio/wav", "mp3": "audio/mp3"}
_ROUTE = re.compile(r"(?:.*/)?models/([^/:]+):(generateContent|streamGenerateContent)")


def _bad(message: str, code: str, param: str | None = None) -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code=code)


def clean_schema(schema: Any) -> Any:
    """A JSON Schema cut to the subset Gemini documents for `responseJsonSchema` (see above)."""
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        return {k: clean_schema(v) if k == "$defs" else v for k, v in schema.items() if k.startswith("$")}
    s = dict(schema)
    if "const" in s and "enum" not in s:
        s["enum"] = [s.pop("const")]
    all_of = s.pop("allOf", None)
    if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
        return clean_schema({**all_of[0], **s})
    out: dict[str, Any] = {}
    for key, value in s.items():
        if key not in _SCHEMA_KEYS:
            continue
        if key in ("properties", "$defs") and isinstance(value, dict):
            out[key] = {name: clean_schema(sub) for name, sub in value.items()}
        elif key in ("anyOf", "oneOf", "prefixItems") and isinstance(value, list):
            out[key] = [clean_schema(sub) for sub in value]
        else:
            out[key] = clean_schema(value) if key in ("items", "additionalProperties") else value
    return out


def _texts(content: Any, where: str) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        out = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in ("text", "refusal") and isinstance(part.get(kind), str):
                out.append(part[kind])
            else:
                raise _bad(f"{where}[{j}]: a {kind!r} part has no place here in Gemini", "unsupported_content_part",
                           where)
        return out
    if content is None:
        return []
    raise _bad(f"{where} must be a string or a list of parts", "unsupported_content_part", where)


def _image(url: Any, where: str) -> dict[str, Any]:
    url = url.get("url") if isinstance(url, dict) else url
    m = _DATA_URL.fullmatch(url) if isinstance(url, str) else None
    if m:
        return {"inlineData": {"mimeType": m[1], "data": m[2]}}
    if isinstance(url, str) and url.startswith("https://"):
        mime = mimetypes.guess_type(urlparse(url).path)[0]
        return {"fileData": {"fileUri": url, **({"mimeType": mime} if mime else {})}}
    raise _bad(f"{where}: Gemini takes images as base64 data: URLs or https URLs", "unsupported_image_url", where)


def _user_parts(content: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return [{"text": t} for t in _texts(content, where)]
    parts = []
    for j, part in enumerate(content):
        at, kind = f"{where}[{j}]", part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"text": part["text"]})
        elif kind == "image_url":
            parts.append(_image(part.get("image_url"), at))
        elif kind == "input_audio" and (part.get("input_audio") or {}).get("format") in _AUDIO:
            audio = part["input_audio"]
            parts.append({"inlineData": {"mimeType": _AUDIO[audio["format"]], "data": audio.get("data", "")}})
        elif kind == "file" and (m := _DATA_URL.fullmatch(str((part.get("file") or {}).get("file_data", "")))):
            parts.append({"inlineData": {"mimeType": m[1], "data": m[2]}})
        else:
            raise _bad(f"{at}: a {kind!r} part has no equivalent in Gemini", "unsupported_content_part", at)
    return parts


def _tool_response(content: Any, where: str) -> dict[str, Any]:
    text = "".join(_texts(content, where)) if not isinstance(content, dict) else None
    if text is None:
        return dict(content)
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"result": text}


def _contents(messages: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(contents, systemInstruction parts) for chat messages."""
    if not isinstance(messages, list) or not messages:
        raise _bad("messages must be a non-empty list", "invalid_request", "messages")
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}

    def add(role: str, parts: list[dict[str, Any]]) -> None:
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        elif parts:
            contents.append({"role": role, "parts": parts})

    for i, m in enumerate(messages):
        at, role = f"messages[{i}]", m.get("role") if isinstance(m, dict) else None
        if role in ("system", "developer"):
            system += [{"text": t} for t in _texts(m.get("content"), f"{at}.content")]
        elif role == "user":
            add("user", _user_parts(m.get("content"), f"{at}.content"))
        elif role == "assistant":
            if m.get("function_call") or m.get("audio"):
                raise _bad(f"{at}: function_call and audio have no equivalent in Gemini", "unsupported_functions", at)
            parts: list[dict[str, Any]] = [{"text": t} for t in _texts(m.get("content"), f"{at}.content") if t]
            if m.get("refusal"):
                parts.append({"text": str(m["refusal"])})
            for j, tc in enumerate(m.get("tool_calls") or []):
                if not isinstance(tc, dict) or tc.get("type", "function") != "function":
                    raise _bad(f"{at}.tool_calls[{j}]: only function calls exist in Gemini", "unsupported_tool_type", at)
                try:
                    parts.append(_s.call_part(tc, with_id=False))
                except ValueError as exc:
                    raise _bad(f"{at}.tool_calls[{j}].function.arguments must be a JSON object ({exc})",
                               "invalid_tool_arguments", f"{at}.tool_calls") from None
                names[str(tc.get("id"))] = parts[-1]["functionCall"]["name"]
            add("model", parts)
        elif role == "tool":
            name = names.get(str(m.get("tool_call_id")))
            if name is None:
                raise _bad(f"{at}: tool_call_id {m.get('tool_call_id')!r} names no earlier assistant tool call; "
                           "Gemini needs the function's name", "unknown_tool_call_id", f"{at}.tool_call_id")
            add("user", [{"functionResponse": {"name": name,
                                               "response": _tool_response(m.get("content"), f"{at}.content")}}])
        else:
            raise _bad(f"{at}: role {role!r} has no equivalent in Gemini", "unsupported_role", f"{at}.role")
    if not contents:
        raise _bad("Gemini needs at least one user or assistant message besides the system prompt", "no_contents",
                   "messages")
    return contents, system


def _tools(tools: Any, choice: Any) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    decls = []
    for j, t in enumerate(tools or []):
        fn = t.get("function") if isinstance(t, dict) and t.get("type") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _bad(f"tools[{j}]: Gemini has function tools only", "unsupported_tool_type", f"tools[{j}]")
        decl: dict[str, Any] = {"name": fn["name"]}
        if fn.get("description"):
            decl["description"] = fn["description"]
        if fn.get("parameters") is not None:
            decl["parametersJsonSchema"] = clean_schema(fn["parameters"])
        decls.append(decl)
    if choice is None or not decls:
        return ([{"functionDeclarations": decls}] if decls else []), None
    mode, names = _tool_mode(choice)
    if mode == "AUTO" and names is not None:  # allowed_tools, auto: offer only those
        decls, names = [d for d in decls if d["name"] in names], None
    config: dict[str, Any] = {"mode": mode, **({"allowedFunctionNames": names} if names else {})}
    return [{"functionDeclarations": decls}], {"functionCallingConfig": config}


def _tool_mode(choice: Any) -> tuple[str, list[str] | None]:
    simple = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
    if isinstance(choice, str) and choice in simple:
        return simple[choice], None
    if isinstance(choice, dict) and choice.get("type") == "function":
        return "ANY", [str((choice.get("function") or {}).get("name"))]
    allowed = choice.get("allowed_tools") if isinstance(choice, dict) and choice.get("type") == "allowed_tools" else None
    if isinstance(allowed, dict) and allowed.get("mode") in ("auto", "required"):
        names = [str((t.get("function") or {}).get("name")) for t in allowed.get("tools") or []]
        return simple[allowed["mode"]], names
    raise _bad("tool_choice: this choice has no equivalent in Gemini", "unsupported_tool_choice", "tool_choice")


def _generation_config(chat: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    limits = [chat[k] for k in ("max_completion_tokens", "max_tokens") if chat.get(k) is not None]
    if limits:
        config["maxOutputTokens"] = min(limits)
    for src, dst in (("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed"),
                     ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")):
        if chat.get(src) is not None:
            config[dst] = chat[src]
    stop = chat.get("stop")
    if stop and not (isinstance(stop, str) or isinstance(stop, list) and all(isinstance(x, str) for x in stop)):
        raise _bad("stop must be a string or a list of strings", "invalid_request", "stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else stop
    rf = chat.get("response_format")
    kind = rf.get("type") if isinstance(rf, dict) else rf
    if isinstance(rf, dict) and kind in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (rf.get("json_schema") or {}).get("schema") if kind == "json_schema" else None
        if schema is not None:
            config["responseJsonSchema"] = clean_schema(schema)
    elif kind not in (None, "text"):
        raise _bad(f"response_format {kind!r} has no equivalent in Gemini", "unsupported_response_format",
                   "response_format")
    return config


def _refuse_unsupported(chat: dict[str, Any]) -> None:
    checks = (("n", chat.get("n") not in (None, 1), "unsupported_n", "Gemini answers one choice (n must be 1)"),
              ("logprobs", bool(chat.get("logprobs")) or bool(chat.get("top_logprobs")), "unsupported_logprobs",
               "logprobs are not translated for Gemini"),
              ("logit_bias", bool(chat.get("logit_bias")), "unsupported_logit_bias", "Gemini has no logit_bias"),
              ("parallel_tool_calls", chat.get("parallel_tool_calls") is False, "unsupported_parallel_tool_calls",
               "Gemini cannot be told to call one function at a time"),
              ("modalities", any(m != "text" for m in chat.get("modalities") or []) or chat.get("audio") is not None,
               "unsupported_audio", "Gemini is asked for text only here"))
    for field, bad, code, why in checks:
        if bad:
            raise _bad(f"{field}: {why}", code, field)
    if chat.get("functions") is not None or chat.get("function_call") is not None:
        raise _bad("functions/function_call: use tools and tool_choice for Gemini", "unsupported_functions",
                   "functions")
    for field in chat:
        if field not in _DROPPED and field not in _MAPPED:
            raise _bad(f"{field}: this parameter has no equivalent in Gemini", "unsupported_parameter", field)


def chat_to_request(chat: dict[str, Any], *, model: str) -> dict[str, Any]:
    """A chat request body as a `generateContent` body (the model goes in the URL: `wire`)."""
    _refuse_unsupported(chat)
    contents, system = _contents(chat.get("messages"))
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    tools, tool_config = _tools(chat.get("tools"), chat.get("tool_choice"))
    if tools:
        body["tools"] = tools
    if tool_config:
        body["toolConfig"] = tool_config
    config = _generation_config(chat)
    if config:
        body["generationConfig"] = config
    return body


def response_to_chat(response: dict[str, Any], *, model: str) -> dict[str, Any]:
    """A GenerateContentResponse as a `chat.completion`."""
    choices = []
    for cand in response.get("candidates") or []:
        text, calls = _s.parts_to_message((cand.get("content") or {}).get("parts") or [])
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None,
                                   **({"tool_calls": calls} if calls else {})}
        choices.append({"index": int(cand.get("index") or 0), "message": message, "logprobs": None,
                        "finish_reason": _s.finish_to_chat(cand.get("finishReason"), bool(calls))})
    if not choices:  # no candidates: the prompt was blocked (promptFeedback.blockReason)
        choices = [{"index": 0, "message": {"role": "assistant", "content": "", "refusal": None}, "logprobs": None,
                    "finish_reason": "content_filter"}]
    out = {"id": _s.new_id("chatcmpl-"), "object": "chat.completion", "created": int(time.time()),
           "model": model, "choices": choices}
    usage = _s.usage_to_chat(response.get("usageMetadata"))
    return {**out, "usage": usage} if usage is not None else out


def chat_to_response(completion: dict[str, Any], *, model: str) -> dict[str, Any]:
    """A `chat.completion` as a GenerateContentResponse (client side)."""
    candidates = []
    for choice in completion.get("choices") or []:
        message = choice.get("message") or {}
        parts = [{"text": t} for t in (message.get("content"), message.get("refusal")) if isinstance(t, str) and t]
        try:
            parts += [_s.call_part(tc, with_id=True) for tc in message.get("tool_calls") or []]
        except ValueError:
            raise UpstreamError("The model's tool call arguments are not a JSON object.") from None
        candidates.append({"content": {"role": "model", "parts": parts or [{"text": ""}]},
                           "finishReason": _s.finish_to_gemini(choice.get("finish_reason")),
                           "index": int(choice.get("index") or 0)})
    out: dict[str, Any] = {"candidates": candidates, "modelVersion": model,
                           "responseId": str(completion.get("id") or _s.new_id("resp-"))}
    meta = _s.usage_to_gemini(completion.get("usage"))
    return {**out, "usageMetadata": meta} if meta is not None else out


def chat_to_events(*, model: str) -> _s.ChatToEvents:
    return _s.ChatToEvents(model)


def events_to_chat(*, model: str) -> _s.EventsToChat:
    return _s.EventsToChat(model)


def _json(body: Any) -> Any:
    if isinstance(body, (bytes, bytearray, str)):
        try:
            return json.loads(body)
        except ValueError:
            return None
    return body


def upstream_error(status: int, body: Any) -> dict[str, Any] | None:
    """Google's error envelope (also as the one-element list a non-SSE stream answers) as an
    OpenAI error envelope `{"error": {message, type, param, code}}`; None for any other body."""
    data = _json(body)
    if isinstance(data, list) and data:
        data = data[0]
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict) or not isinstance(err.get("message"), str):
        return None
    return {"error": _s.openai_error(status, err)}


def error_envelope(status: int, error: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI error object (or envelope) as Google's `{"error": {code, message, status}}`."""
    return _s.google_error(error, status)


def _headers(api_key: str | None) -> dict[str, str]:
    return {"x-goog-api-key": api_key} if api_key else {}


def wire(*, model: str, stream: bool, api_key: str | None) -> UpstreamWire:
    name = model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"
    method = "streamGenerateContent" if stream else "generateContent"
    return UpstreamWire(f"{quote(name, safe='/')}:{method}", _headers(api_key), {"alt": "sse"} if stream else {})


def models_wire(*, api_key: str | None) -> UpstreamWire:
    return UpstreamWire("models", _headers(api_key), {"pageSize": "1000"})  # the most one page holds


def parse_models(body: Any) -> list[str]:
    """Model ids (without `models/`) of a `models.list` answer that can `generateContent`."""
    data = _json(body)
    models = data.get("models", []) if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise UpstreamError("Gemini's model list is not a `{\"models\": [...]}` object.")
    return [str(m["name"]).removeprefix("models/") for m in models
            if isinstance(m, dict) and m.get("name") and "generateContent" in (m.get("supportedGenerationMethods") or [])]


def client_route(path: str) -> tuple[str, bool]:
    """(model, stream) of a client's `.../models/{model}:generateContent` or `:streamGenerateContent`
    path, which `request_to_chat` cannot see; InvalidRequestError for any other path."""
    m = _ROUTE.fullmatch(path.split("?", 1)[0])
    if not m:
        raise _bad(f"{path!r} is not a models/{{model}}:generateContent path", "invalid_request")
    return m[1], m[2] == "streamGenerateContent"
