"""The contract: request and response objects every surface shares (pydantic).

The operations layer parses every input with these models (HTTP bodies, `Bodhi`
arguments, CLI options, widget forms), every response is serialised through them, and
the OpenAPI document is generated from them, so the document cannot drift from what
the server does (docs/ARCHITECTURE.md, "One HTTP contract"). API keys arrive as
`SecretStr` (hidden in reprs and validation errors) and never leave in a response.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, Strict, ValidationError, field_validator

from ..objs.alias import Alias
from ..objs.api_model_alias import API_MODEL_ID_PATTERN, ApiFormat, check_api_model_id
from ..objs.errors import InvalidRequestError
from ..objs.router_alias import RouterAliasSpec
from ..services.upstream_client import MAX_TEST_PROMPT

__all__ = [
    "ApiModelCreateRequest", "ApiModelUpdateRequest", "ApiModelResponse", "PaginatedApiModelResponse",
    "TestPromptRequest", "TestPromptResponse", "FetchModelsRequest", "FetchModelsResponse",
    "AliasRequest", "AliasResponse", "AliasListResponse", "AliasFileErrorObj",
    "OpenAIModel", "OpenAIModelList", "ChatCompletionRequest", "ChatMessage", "OpenAIErrorEnvelope",
    "OpenAIError", "PullRequest", "PullJobResponse", "ChatCompletionResponse", "ChatChoice", "Usage", "parse",
    "EmbeddingRequest", "EmbeddingObj", "EmbeddingUsage", "EmbeddingResponse",
]
__all__ += ["RouterAliasRequest", "RouterAliasUpdateRequest", "RouterAliasResponse", "RouterAliasListResponse",
            "RouterTargetStateObj"]

M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: object) -> M:
    """Validate `data` into `model`; the one place a ValidationError becomes our error.

    The status is the model's own (`validation_status`): 422 for management objects,
    400 for the OpenAI-compatible ones, as OpenAI answers; the same on every surface.
    """
    if not isinstance(data, dict):  # like unparseable JSON: the body's shape, not a field, is wrong
        raise InvalidRequestError("The request body must be a JSON object.")
    status: int = getattr(model, "validation_status", 422)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequestError.from_validation(exc, status) from None
    except RecursionError:
        raise InvalidRequestError("The request body is nested too deeply.", status=status,
                                  code="validation_error") from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApiModelCreateRequest(_Strict):
    id: Annotated[str, AfterValidator(check_api_model_id)] = Field(
        description="Your name for this provider, e.g. 'openai'.", json_schema_extra={"pattern": API_MODEL_ID_PATTERN})
    api_format: ApiFormat = ApiFormat.OPENAI
    base_url: str = Field(description="OpenAI-compatible base URL, e.g. https://api.openai.com/v1")
    api_key: SecretStr | None = Field(default=None, description="Stored encrypted; never returned.")
    models: list[str] = Field(default_factory=list)
    prefix: str | None = None
    forward_all_with_prefix: bool = False


class ApiModelUpdateRequest(_Strict):
    api_format: ApiFormat | None = None
    base_url: str | None = None
    api_key: SecretStr | None = Field(default=None, description="Leave out to keep the stored key.")
    models: list[str] | None = None
    prefix: str | None = None
    forward_all_with_prefix: bool | None = None


class ApiModelResponse(BaseModel):
    id: str
    api_format: ApiFormat
    base_url: str
    models: list[str]
    prefix: str | None
    forward_all_with_prefix: bool
    created_at: datetime
    updated_at: datetime
    has_api_key: bool
    api_key_masked: str | None = Field(description="First 3 and last 4 characters, or *** for short keys; "
                                       "null when there is no key or it cannot be decrypted.")
    error: str | None = Field(default=None, description="Why the stored key cannot be used (then api_key_masked "
                                                        "is null): set a new api_key or delete the API model.")


class PaginatedApiModelResponse(BaseModel):
    data: list[ApiModelResponse]
    total: int
    page: int
    page_size: int


class _CredsRequest(_Strict):
    id: str | None = Field(default=None, description="Use the stored base URL and key of this API model.")
    base_url: str | None = None
    api_key: SecretStr | None = None


class TestPromptRequest(_CredsRequest):
    model: str = Field(min_length=1)
    prompt: str = Field(default="Say hello", max_length=MAX_TEST_PROMPT)


class TestPromptResponse(BaseModel):
    success: bool
    response: str | None = None
    error: str | None = None


class FetchModelsRequest(_CredsRequest):
    pass


class FetchModelsResponse(BaseModel):
    models: list[str]


class AliasRequest(Alias):
    """A user alias as sent by a client: the domain object's own fields and rules."""


class AliasResponse(Alias):
    source: Literal["user"] = "user"


class AliasFileErrorObj(BaseModel):
    file: str
    error: str


class AliasListResponse(BaseModel):
    data: list[AliasResponse]
    errors: list[AliasFileErrorObj] = Field(description="Alias files that could not be read.")


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


# -- router aliases ---------------------------------------------------------------------------


class RouterAliasRequest(RouterAliasSpec):
    """A router alias as sent by a client: the domain object's own fields and rules."""


class RouterAliasUpdateRequest(_Strict):
    """Change the fields given; absent or null fields keep their values, except `max_attempts`,
    where an explicit null means every target. The name cannot change."""

    alias: str | None = Field(default=None, description="If given, must be the alias in the path.")
    targets: list[str] | None = None
    cooldown_seconds: float | None = None
    max_attempts: int | None = None
    honor_retry_after: bool | None = None


class RouterTargetStateObj(BaseModel):
    target: str
    state: Literal["ready", "cooling", "unknown"] = Field(
        description="ready; cooling (skipped until cooling_until, after a 429, 5xx or connection failure); "
                    "unknown (no API model or local alias serves this name).")
    cooling_until: datetime | None = None
    served_by: str | None = Field(default=None, description="e.g. api:openai or user:my-model")


class RouterAliasResponse(BaseModel):
    alias: str
    targets: list[str]
    cooldown_seconds: float
    max_attempts: int = Field(description="Targets tried per request at most.")
    honor_retry_after: bool
    created_at: datetime
    updated_at: datetime
    state: list[RouterTargetStateObj] = Field(description="Each target's state in the process that answered.")


class RouterAliasListResponse(BaseModel):
    data: list[RouterAliasResponse]


# -- pulling GGUF files -----------------------------------------------------------------


class PullRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=3, max_length=400,
                       description="owner/repo, owner/repo:QUANT (e.g. Q4_K_M) or owner/repo/path/file.gguf")
    revision: str = Field(default="main", min_length=1, max_length=200, description="branch, tag or commit")


class PullJobResponse(BaseModel):
    id: str
    ref: str
    repo: str
    filename: str
    model: str = Field(description="The name the file is served under once the pull is done")
    status: Literal["running", "done", "error", "cancelled"]
    downloaded_bytes: int
    total_bytes: int | None
    progress: float = Field(description="0.0 to 1.0")
    error: OpenAIError | None = None
    started_at: float
    finished_at: float | None = None
