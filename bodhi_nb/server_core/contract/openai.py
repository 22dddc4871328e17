"""OpenAI-compatible objects: models, chat completions, embeddings and the error envelope.
They allow extra fields, which pass through to the upstream; their validation status is 400,
as OpenAI answers."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator

__all__ = ['OpenAIModel', 'OpenAIModelList', 'ChatMessage', 'ChatCompletionRequest', 'Usage', 'ChatChoice', 'ChatCompletionResponse', 'EmbeddingRequest', 'EmbeddingObj', 'EmbeddingUsage', 'EmbeddingResponse', 'OpenAIError', 'OpenAIErrorEnvelope']

class OpenAIModel(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class OpenAIModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIModel]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Annotated[str, Strict()]
    content: Any = None


class ChatCompletionRequest(BaseModel):
    """OpenAI chat completion request; unknown fields are forwarded untouched.

    It validates; the raw body is what is forwarded, so values are never coerced on
    their way to the upstream.
    """

    validation_status: ClassVar[int] = 400
    model_config = ConfigDict(extra="allow")
    model: Annotated[str, Strict()] = Field(min_length=1, pattern=r"\S")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: Annotated[bool, Strict()] | None = False
    temperature: float | None = None
    max_tokens: int | None = None
    stream_options: dict[str, Any] | None = None


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


class ChatChoice(BaseModel):
    model_config = ConfigDict(extra="allow")
    index: int
    message: dict[str, Any] | None = None
    finish_reason: str | None = None


class ChatCompletionResponse(BaseModel):
    """A non-streamed chat completion as the upstream sent it (extra fields kept)."""

    model_config = ConfigDict(extra="allow")
    id: str | None = None
    object: str | None = None
    created: int | None = None
    model: str | None = None
    choices: list[ChatChoice]
    usage: Usage | None = None


MAX_EMBEDDING_INPUTS = 2048  # OpenAI's own limit per request


class EmbeddingRequest(BaseModel):
    """OpenAI embeddings request; unknown fields are forwarded untouched (as for chat).

    `input` is one text or a list of texts (token arrays are accepted for API models;
    the local engine embeds text only).
    """

    validation_status: ClassVar[int] = 400
    model_config = ConfigDict(extra="allow")
    model: Annotated[str, Strict()] = Field(min_length=1, pattern=r"\S")
    input: (Annotated[str, Strict()] | Annotated[list[Annotated[str, Strict()]], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]
            | Annotated[list[Annotated[int, Strict()]], Field(min_length=1)]
            | Annotated[list[Annotated[list[Annotated[int, Strict()]], Field(min_length=1)]], Field(min_length=1)])
    encoding_format: Literal["float", "base64"] | None = Field(
        default=None, description="float (default) or base64: little-endian float32, base64-encoded.")
    dimensions: Annotated[int, Strict()] | None = Field(default=None, ge=1)
    user: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _input_shape(cls, v: Any) -> Any:
        """One clear message per wrong shape (a union's own errors name its branches)."""
        if isinstance(v, str):
            return v
        if not isinstance(v, list) or not v:
            raise ValueError("must be a string or a non-empty list of strings")
        if all(isinstance(x, str) for x in v):
            if len(v) > MAX_EMBEDDING_INPUTS:
                raise ValueError(f"at most {MAX_EMBEDDING_INPUTS} texts per request")
            return v
        if all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            return v
        if all(isinstance(x, list) and x and all(isinstance(t, int) and not isinstance(t, bool) for t in x)
               for x in v):
            if len(v) > MAX_EMBEDDING_INPUTS:
                raise ValueError(f"at most {MAX_EMBEDDING_INPUTS} inputs per request")
            return v
        raise ValueError("must be a string, a list of strings, or token arrays (lists of integers)")


class EmbeddingObj(BaseModel):
    model_config = ConfigDict(extra="allow")
    object: str = "embedding"
    embedding: list[float] | str = Field(description="The vector, or with encoding_format=base64 its float32 "
                                                      "little-endian bytes in base64.")
    index: int


class EmbeddingUsage(BaseModel):
    model_config = ConfigDict(extra="allow")
    prompt_tokens: int | None = None
    total_tokens: int | None = None


class EmbeddingResponse(BaseModel):
    """An embeddings response as the upstream sent it (extra fields kept)."""

    model_config = ConfigDict(extra="allow")
    object: str = "list"
    data: list[EmbeddingObj]
    model: str | None = None
    usage: EmbeddingUsage | None = None


class OpenAIError(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorEnvelope(BaseModel):
    error: OpenAIError


