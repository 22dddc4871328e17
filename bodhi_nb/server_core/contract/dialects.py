"""Objects of the other dialects clients speak: Anthropic Messages and OpenAI Responses.

Only what the gateway itself needs is checked (the model, the turn structure); every other
field passes through to the target or its translation, as for chat completions. Their
validation status is 400, as both providers answer, and the handler writes it in the
dialect's own error envelope.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AnthropicErrorEnvelope",
    "AnthropicCountTokensRequest",
    "AnthropicCountTokensResponse",
    "AnthropicMessage",
    "AnthropicMessagesRequest",
    "ResponseDeleted",
    "ResponseInputItemList",
    "ResponseObject",
    "ResponsesCreateRequest",
]


class _Passthrough(BaseModel):
    model_config = ConfigDict(extra="allow")
    validation_status: ClassVar[int] = 400


class AnthropicMessagesRequest(_Passthrough):
    """POST messages, as the Anthropic SDK sends it."""

    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    stream: bool | None = None


class AnthropicCountTokensRequest(_Passthrough):
    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)


class AnthropicCountTokensResponse(BaseModel):
    input_tokens: int


class AnthropicMessage(_Passthrough):
    """An Anthropic Message (`type: "message"`), or, streamed, its event sequence."""

    id: str
    type: str
    role: str
    model: str
    content: list[dict[str, Any]]
    stop_reason: str | None = None
    usage: dict[str, Any]


class ResponsesCreateRequest(_Passthrough):
    """POST responses, as the openai SDK's `responses.create` sends it."""

    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]]
    previous_response_id: str | None = None
    store: bool | None = Field(default=None, description="Keep the response for previous_response_id "
                                                         "(default true, as OpenAI).")
    stream: bool | None = None


class ResponseObject(_Passthrough):
    """A Response (`object: "response"`), or, streamed, its event sequence."""

    id: str
    object: str
    status: str | None = None
    model: str
    output: list[dict[str, Any]]


class ResponseDeleted(BaseModel):
    id: str
    object: str = "response"
    deleted: bool = True


class ResponseInputItemList(BaseModel):
    object: str = "list"
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool = False


class AnthropicErrorObj(BaseModel):
    type: str
    message: str


class AnthropicErrorEnvelope(BaseModel):
    """Anthropic's error body: `{"type": "error", "error": {"type", "message"}}`."""

    model_config = ConfigDict(extra="allow")

    type: str = "error"
    error: AnthropicErrorObj
