"""Chat operations and the structured-output rule.

`structured_format` (a pydantic model or JSON schema as `response_format`, and the parser
that validates the reply) is written once here and used by `Bodhi.chat` and `Bodhi.map`.
The message and reply-text rules live in objs/openai.py.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

from ...objs.errors import InvalidRequestError, StructuredOutputError, validation_message
from ...objs.openai import reply_text
from ..gateway import Gateway, OpenChat

__all__ = ["ChatOps", "structured_format", "strict_schema"]

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)
ReplyParser = Callable[[str], Any]


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema made acceptable to OpenAI's strict mode: every object lists all
    its properties as required and allows no others (a field with a default is then always
    written by the model, which the pydantic model still accepts). A copy; the input is kept."""
    out = copy.deepcopy(schema)
    stack: list[Any] = [out]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("type") == "object" and isinstance(node.get("properties"), dict):
                node["additionalProperties"] = False
                node["required"] = list(node["properties"])
            if "default" in node and node["default"] is None:  # as the openai SDK does
                del node["default"]
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return out


def _unfence(text: str) -> str:
    m = _FENCE.match(text)
    return m.group(1) if m else text


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]


def structured_format(rf: Any) -> tuple[dict[str, Any] | None, ReplyParser | None]:
    """The request's `response_format` for `rf`, and the parser of the reply text.

    - a pydantic model class: `{"type": "json_schema", "json_schema": {"name", "schema", "strict": true}}`;
      the parser returns a validated instance of the model;
    - a dict with `type` json_schema / json_object / text: sent as given; the parser returns the
      JSON value (checked against `json_schema.schema` when there is one), or none for text;
    - any other dict is taken as a JSON schema and sent as json_schema.
    A parser raises `StructuredOutputError` holding the raw reply. A reply in a ```json fence
    (small models write one) is read inside the fence.
    """
    if rf is None:
        return None, None
    from pydantic import BaseModel, ValidationError

    if isinstance(rf, type) and issubclass(rf, BaseModel):
        model = rf
        payload = {"type": "json_schema", "json_schema": {
            "name": _schema_name(model.__name__), "schema": strict_schema(model.model_json_schema()), "strict": True}}

        def parse_model(text: str) -> Any:
            try:
                return model.model_validate_json(_unfence(text))
            except ValidationError as exc:
                raise StructuredOutputError(f"The reply does not match response_format ({model.__name__}): "
                                            f"{validation_message(exc)[0]}", text) from None

        return payload, parse_model
    if isinstance(rf, dict):
        if rf.get("type") in ("json_schema", "json_object", "text"):
            js = rf.get("json_schema")
            payload, schema = rf, (js.get("schema") if isinstance(js, dict) else None)
        else:
            payload = {"type": "json_schema", "json_schema": {"name": _schema_name(str(rf.get("title") or "response")),
                                                              "schema": rf}}
            schema = rf
        if payload.get("type") == "text":
            return payload, None

        def parse_json(text: str) -> Any:
            import jsonschema

            try:
                data = json.loads(_unfence(text))
                if isinstance(schema, dict):
                    jsonschema.validate(data, schema)
            except (ValueError, jsonschema.ValidationError) as exc:
                raise StructuredOutputError(f"The reply does not match response_format: {_first_line(exc)}",
                                            text) from None
            return data

        return payload, parse_json
    raise InvalidRequestError("response_format must be a pydantic model class or a JSON schema dict.",
                              param="response_format")


def _schema_name(name: str) -> str:
    """OpenAI's rule for `json_schema.name`: a-z, A-Z, 0-9, _ and -, at most 64 characters."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "response"


class ChatOps:
    """Chat completions, validated by the contract and forwarded by the gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def open(self, body: object, *, cache: bool | None = None) -> OpenChat:
        """Validate, route and open the upstream response (for relaying as it arrives);
        `cache` as in `Gateway.open_chat` (None: the server's response-cache option)."""
        return await self._gateway.open_chat(body, cache=cache)

    async def completion(self, body: dict[str, Any], *, cache: bool | None = None) -> dict[str, Any]:
        return await self._gateway.completion(body, cache=cache)

    async def structured(self, body: dict[str, Any], response_format: Any, *, cache: bool | None = None) -> Any:
        """A completion with `response_format` (see `structured_format`), its reply parsed:
        a validated model instance, a JSON value, or the text for `{"type": "text"}`."""
        payload, parse = structured_format(response_format)
        resp = await self.completion({**body, "response_format": payload}, cache=cache)
        text = reply_text(resp)
        return parse(text) if parse is not None else text

    def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        return self._gateway.stream_chunks(body)
