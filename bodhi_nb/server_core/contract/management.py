"""Management objects: API models, test prompt and fetch-models, user aliases, router
aliases and pulls. API keys arrive as `SecretStr` (hidden in reprs and validation errors) and
never leave in a response."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr

from ...objs.alias import Alias
from ...objs.api_model_alias import API_MODEL_ID_PATTERN, MAX_TEST_PROMPT, ApiFormat, check_api_model_id
from ...objs.router_alias import RouterAliasSpec
from .base import Strict as _Strict
from .openai import OpenAIError

__all__ = ['ApiModelCreateRequest', 'ApiModelUpdateRequest', 'ApiModelResponse', 'PaginatedApiModelResponse', '_CredsRequest', 'TestPromptRequest', 'TestPromptResponse', 'FetchModelsRequest', 'FetchModelsResponse', 'AliasRequest', 'AliasResponse', 'AliasFileErrorObj', 'AliasListResponse', 'RouterAliasRequest', 'RouterAliasUpdateRequest', 'RouterTargetStateObj', 'RouterAliasResponse', 'RouterAliasListResponse', 'PullRequest', 'PullJobResponse']


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
    id: str | None = Field(default=None, description="Use the stored base URL, key and format of this API model.")
    base_url: str | None = None
    api_key: SecretStr | None = None
    api_format: ApiFormat = Field(default=ApiFormat.OPENAI,
                                  description="The provider's wire format, with base_url (a stored id uses its own).")


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
