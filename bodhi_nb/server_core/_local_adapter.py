"""Private: how a request for the local llama.cpp engine is adapted, and its answer with it.

llama_cpp.server (0.3.x) is OpenAI-shaped but not OpenAI-complete: it ignores
`max_completion_tokens`, `stream_options.include_usage` and `n`, reads a JSON schema only
as `{"type": "json_object", "schema": ...}`, renders `tools` into the prompt without ever
parsing a call back out unless its chat format can call tools, and returns embeddings as
floats only. Every rule that closes those gaps is here, in one place, and applies to the
local engine only: requests to API models never come through this module and stay
pass-through apart from the model name (docs/ARCHITECTURE.md, "Embeddings and local
fidelity").

- `max_completion_tokens` becomes `max_tokens` (the smaller of the two when both are set).
- `stream_options` is taken off; a stream keeps the engine's own final usage chunk (see
  `services/_engine_fidelity.py`, counted by llama.cpp's generate loop) when the caller asked
  for it, and loses it otherwise.
- `n > 1` sends n requests one after another (the engine serves one at a time anyway; a
  seed, when given, becomes seed + i so the choices differ) and merges them: choices indexed
  0..n-1, completion tokens summed, the prompt counted once, as OpenAI counts it. A stream
  relays choice 0's chunks, then choice 1's, each re-indexed, then one usage chunk.
- `response_format` `json_schema` becomes llama.cpp's `json_object` + `schema` (grammar-
  constrained decoding); `json_object` and `text` are kept.
- `tools` pass when the alias's chat format can call tools (`chatml-function-calling`,
  `functionary*`) or `tool_choice` names one function (llama.cpp then forces that call with
  a grammar built from its parameters); otherwise a 400 `tools_not_supported`.
- embeddings: text only (token arrays are a 400), no `dimensions`; `encoding_format:
  "base64"` is produced here (float32 little-endian, as OpenAI encodes it), since the
  engine answers floats whatever it is asked.
"""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ..objs.errors import BodhiError, InvalidRequestError, UpstreamError
from ..objs.sse import DONE, DONE_FRAME, SSEDecoder, encode_event
from ..services.upstream_client import ForwardTarget, UpstreamClient, UpstreamResponse
from ..services.usage import StreamTap

__all__ = ["CHAT", "EMBEDDINGS", "MAX_LOCAL_N", "TOOL_CHAT_FORMATS", "LocalPlan", "adapt", "forward_local",
           "local_response_format"]

CHAT = "chat/completions"
EMBEDDINGS = "embeddings"
MAX_LOCAL_N = 16  # n requests run one after another on the CPU; more is a mistake, not a workload
TOOL_CHAT_FORMATS = ("chatml-function-calling", "functionary", "functionary-v1", "functionary-v2")
_JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class LocalPlan:
    """One caller request as the engine gets it: the body of each engine request, and what to
    do with the answers."""

    endpoint: str
    body: dict[str, Any]
    stream: bool = False
    n: int = 1
    usage_event: bool = False  # a stream ends with the usage chunk
    usage_asked: bool = False  # the caller asked for it (stream_options.include_usage)
    base64: bool = False  # embeddings: encode the vectors


def local_response_format(body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's `{"type": "json_schema", "json_schema": {"schema": ...}}` as llama.cpp reads it,
    `{"type": "json_object", "schema": ...}`; any other body is returned as it is."""
    rf = body.get("response_format")
    if isinstance(rf, dict) and rf.get("type") == "json_schema" and isinstance(rf.get("json_schema"), dict):
        schema = rf["json_schema"].get("schema")
        return {**body, "response_format": {"type": "json_object", **({"schema": schema} if schema else {})}}
    return body


def adapt(endpoint: str, body: dict[str, Any], *, model: str, stream: bool = False, chat_format: str | None = None,
          keep_usage: bool = False) -> LocalPlan:
    """The plan for one request to local `model` (pure; bad input raises a 400).

    `keep_usage`: a stream keeps the usage chunk even if the caller did not ask (someone
    downstream, the usage ledger, reads and strips it)."""
    if endpoint == EMBEDDINGS:
        return _adapt_embeddings(body, model)
    out = dict(body)
    mct = out.pop("max_completion_tokens", None)
    if isinstance(mct, int) and not isinstance(mct, bool):
        mt = out.get("max_tokens")
        out["max_tokens"] = min(mt, mct) if isinstance(mt, int) and not isinstance(mt, bool) else mct
    elif mct is not None:
        raise InvalidRequestError("max_completion_tokens must be an integer.", param="max_completion_tokens")
    opts = out.pop("stream_options", None)
    asked = isinstance(opts, dict) and opts.get("include_usage") is True
    n = out.pop("n", None)
    if n is None:
        n = 1
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_LOCAL_N:
        raise InvalidRequestError(f"n must be an integer from 1 to {MAX_LOCAL_N} for a local model.", param="n")
    _check_tools(out, model, chat_format)
    out = local_response_format(out)
    return LocalPlan(CHAT, out, stream=stream, n=n, usage_event=stream and (asked or keep_usage), usage_asked=asked)


def _check_tools(body: dict[str, Any], model: str, chat_format: str | None) -> None:
    for field, choice_field in (("tools", "tool_choice"), ("functions", "function_call")):
        tools = body.get(field)
        if not tools:
            continue
        choice = body.get(choice_field)
        named = isinstance(choice, dict) and (isinstance(choice.get("function"), dict) or "name" in choice)
        if (chat_format or "").startswith(TOOL_CHAT_FORMATS) or named or choice == "none":
            continue
        raise InvalidRequestError(
            f"The local model '{model}' cannot call tools: its chat format has no tool calling, so `{field}` "
            f"would be ignored. Name one function in `{choice_field}` to force that call, or use an alias whose "
            "context_params set chat_format: chatml-function-calling.", param=field, code="tools_not_supported")


def _adapt_embeddings(body: dict[str, Any], model: str) -> LocalPlan:
    out = dict(body)
    inp = out.get("input")
    texts = [inp] if isinstance(inp, str) else inp
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise InvalidRequestError(f"The local model '{model}' embeds text: send `input` as a string or a list of "
                                  "strings (token arrays are for API models).", param="input")
    if any(not t for t in texts):
        raise InvalidRequestError("`input` holds an empty string; every text to embed needs at least one character.",
                                  param="input")
    if out.pop("dimensions", None) is not None:
        raise InvalidRequestError(f"The local model '{model}' has one embedding size; leave out `dimensions`.",
                                  param="dimensions", code="dimensions_not_supported")
    fmt = out.pop("encoding_format", None)
    out.pop("user", None)
    return LocalPlan(EMBEDDINGS, out, base64=fmt == "base64")


# -- answers ----------------------------------------------------------------------------------


async def forward_local(upstream: UpstreamClient, target: ForwardTarget, plan: LocalPlan) -> UpstreamResponse:
    """Send the plan to the engine through the one forwarding path; the caller's answer."""
    if plan.endpoint == EMBEDDINGS:
        resp = await upstream.forward(target, EMBEDDINGS, plan.body)
        return await _as_base64(resp) if plan.base64 and resp.ok else resp
    if plan.n == 1:
        resp = await upstream.forward_chat_completion(target, plan.body, plan.stream)
        if plan.stream and resp.ok and not plan.usage_event:
            return UpstreamResponse.streamed(resp, _strip_usage(resp))
        return resp
    if plan.stream:
        return await _fan_out_stream(upstream, target, plan)
    return await _fan_out(upstream, target, plan)


def _leg(plan: LocalPlan, i: int) -> dict[str, Any]:
    seed = plan.body.get("seed")
    if i and isinstance(seed, int) and not isinstance(seed, bool):
        return {**plan.body, "seed": seed + i}
    return plan.body


async def _strip_usage(resp: UpstreamResponse) -> AsyncIterator[bytes]:
    try:
        async for out in StreamTap(strip=True).relay(resp.aiter_bytes()):
            yield out
    finally:
        await resp.aclose()


async def _as_base64(resp: UpstreamResponse) -> UpstreamResponse:
    t = time.perf_counter()
    raw, data = await resp.aread_json()
    try:
        for item in data["data"]:
            vec = item["embedding"]
            item["embedding"] = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
    except (KeyError, TypeError, struct.error):
        raise UpstreamError(f"The {resp.label} answered with something that is not an embeddings list.") from None
    body = json.dumps(data, separators=(",", ":")).encode()
    return UpstreamResponse.replayed(resp.status, {**resp.headers, **_JSON}, body, resp.label,
                     resp.upstream_seconds + time.perf_counter() - t)


async def _fan_out(upstream: UpstreamClient, target: ForwardTarget, plan: LocalPlan) -> UpstreamResponse:
    merged: dict[str, Any] | None = None
    seconds = 0.0
    label = "local engine"
    completion = 0
    for i in range(plan.n):
        resp = await upstream.forward_chat_completion(target, _leg(plan, i), False)
        if not resp.ok:
            return resp  # the first failure, as the engine said it
        _, data = await resp.aread_json()
        seconds += resp.upstream_seconds
        label = resp.label
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices:
            raise UpstreamError(f"The {resp.label} answered with something that is not a chat completion.")
        choice = {**choices[0], "index": i}
        completion += int(((data.get("usage") or {}).get("completion_tokens")) or 0)
        if merged is None:
            merged = {**data, "choices": [choice]}
        else:
            merged["choices"].append(choice)
    assert merged is not None
    usage = merged.get("usage")
    if isinstance(usage, dict):
        prompt = int(usage.get("prompt_tokens") or 0)
        merged["usage"] = {**usage, "completion_tokens": completion, "total_tokens": prompt + completion}
    return UpstreamResponse.replayed(200, _JSON, json.dumps(merged, separators=(",", ":")).encode(), label, seconds)


async def _fan_out_stream(upstream: UpstreamClient, target: ForwardTarget, plan: LocalPlan) -> UpstreamResponse:
    first = await upstream.forward_chat_completion(target, _leg(plan, 0), True)
    if not first.ok:
        return first  # nothing sent yet: the caller gets the engine's error as it is
    return UpstreamResponse.streamed(first, _relay_choices(upstream, target, plan, first))


async def _relay_choices(upstream: UpstreamClient, target: ForwardTarget, plan: LocalPlan,
                         first: UpstreamResponse) -> AsyncIterator[bytes]:
    resp: UpstreamResponse | None = first
    prompt = completion = 0
    last: dict[str, Any] = {}
    try:
        for i in range(plan.n):
            if resp is None:
                resp = await upstream.forward_chat_completion(target, _leg(plan, i), True)
                if not resp.ok:
                    err = await resp.error()
                    yield encode_event(err.to_envelope())
                    return
            dec = SSEDecoder()
            try:
                async for chunk in resp.aiter_bytes():
                    for data in dec.feed(chunk):
                        if data == DONE:
                            continue
                        try:
                            event = json.loads(data)
                        except ValueError:
                            raise UpstreamError(f"The {resp.label} sent a stream event that is not JSON.") from None
                        if not isinstance(event, dict):
                            continue
                        if "error" in event:
                            yield encode_event(event)
                            return
                        usage = event.get("usage")
                        if isinstance(usage, dict) and not event.get("choices"):
                            prompt = int(usage.get("prompt_tokens") or 0)
                            completion += int(usage.get("completion_tokens") or 0)
                            last = event
                            continue
                        for c in event.get("choices") or []:
                            if isinstance(c, dict):
                                c["index"] = i
                        last = event
                        yield encode_event(event)
            finally:
                await resp.aclose()
            resp = None
        if plan.usage_event:
            yield encode_event({"id": last.get("id", "chatcmpl-local"), "object": "chat.completion.chunk",
                          "created": last.get("created", 0), "model": last.get("model", ""), "choices": [],
                          "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                    "total_tokens": prompt + completion}})
        yield DONE_FRAME
    except BodhiError as exc:
        yield encode_event(exc.to_envelope())
    finally:
        if resp is not None:
            await resp.aclose()
