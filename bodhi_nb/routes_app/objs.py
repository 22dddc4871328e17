"""Request and response objects of the HTTP surface (pydantic).

They validate what handlers receive and generate the OpenAPI document's schemas, so
the document cannot drift from what the server accepts. API keys arrive as
`SecretStr` (hidden in reprs and validation errors) and never leave in a response.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ..objs.alias import Alias
from ..objs.api_model_alias import API_MODEL_ID_PATTERN, ApiFormat

__all__ = [
    "ApiModelCreateRequest", "ApiModelUpdateRequest", "ApiModelResponse", "PaginatedApiModelResponse",
    "TestPromptRequest", "TestPromptResponse", "FetchModelsRequest", "FetchModelsResponse",
    "AliasRequest", "AliasResponse", "AliasListResponse", "AliasFileErrorObj",
    "OpenAIModel", "OpenAIModelList", "ChatCompletionRequest", "ChatMessage", "OpenAIErrorEnvelope",
    "OpenAIError",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApiModelCreateRequest(_Strict):
    id: str = Field(pattern=API_MODEL_ID_PATTERN, description="Your name for this provider, e.g. 'openai'.")
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
    api_key_masked: str | None = Field(description="First 3 and last 4 characters, or *** for short keys.")


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
    prompt: str = Field(default="Say hello", max_length=30)


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
    role: str
    content: Any = None


class ChatCompletionRequest(BaseModel):
    """OpenAI chat completion request; unknown fields are forwarded untouched."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    temperature: float | None = None
    max_tokens: int | None = None
    stream_options: dict[str, Any] | None = None


class OpenAIError(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorEnvelope(BaseModel):
    error: OpenAIError
