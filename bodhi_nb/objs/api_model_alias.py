"""ApiModelAlias: a remote OpenAI-compatible provider and the model names it serves.

It never holds the API key: the key lives only in the encrypted store, and what the
outside world sees of it is `mask_api_key`.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from enum import Enum
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_serializer, field_validator, model_validator

__all__ = ["ApiFormat", "ApiModelAlias", "mask_api_key", "normalize_base_url", "utc_now", "API_MODEL_ID_PATTERN",
           "MAX_BASE_URL_LENGTH", "MAX_MODEL_NAME_LENGTH", "MAX_API_KEY_LENGTH", "STORED", "check_api_model_id",
           "check_api_key", "MAX_TEST_PROMPT"]

MAX_TEST_PROMPT = 30  # characters: a test prompt checks a key and a model, it is not a chat

API_MODEL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
_ID_RE = re.compile(API_MODEL_ID_PATTERN)


def utc_now() -> datetime:
    """Timestamps are UTC with microseconds, so 'most recently updated' is well ordered."""
    return datetime.now(timezone.utc)


MAX_BASE_URL_LENGTH = 2048
MAX_MODEL_NAME_LENGTH = 256
STORED = {"stored": True}
"""Validation context for records read back from the store: a base_url written under an
older, looser rule still loads (so one old record cannot break every listing); it is
checked again, with a clear error naming the record, when a request would use it."""


def _stored(info: ValidationInfo) -> bool:
    return info.context is not None and bool(info.context.get("stored"))


def normalize_base_url(url: str) -> str:
    """The one base-URL rule, for create, update and raw test/fetch calls.

    http(s) only, with a host and a port in range; no query or fragment; no trailing
    slash. Whitespace and control characters (CR, LF, NUL, ...) are refused anywhere,
    so a URL can never split a request line or a header. Credentials in the URL are
    refused: httpx would send them as Basic auth in place of the Bearer key, and the
    URL is shown in listings, so the key belongs in the api_key field.
    """
    if not isinstance(url, str):
        raise ValueError("base_url must be a string")
    if len(url) > MAX_BASE_URL_LENGTH:
        raise ValueError(f"base_url must be at most {MAX_BASE_URL_LENGTH:,} characters")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError("base_url must not contain spaces, line breaks, NUL or other control characters")
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise ValueError("base_url is not a valid URL") from None
    try:
        port = parts.port  # ValueError when not a number in 0..65535
    except ValueError:
        raise ValueError("base_url port must be a number between 1 and 65535") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("base_url must be an http:// or https:// URL with a host")
    if "@" in parts.netloc:
        raise ValueError("base_url must not contain a user name or password; put the key in the api_key field")
    if port is not None and not 1 <= port <= 65535:
        raise ValueError("base_url port must be between 1 and 65535")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError("base_url must not have a query or fragment")
    return url.rstrip("/")


def check_api_model_id(v: str) -> str:
    """The one id rule, shared by the domain object and the request objects."""
    if not _ID_RE.fullmatch(v):  # fullmatch: "$" alone would let a trailing newline through
        raise ValueError(
            "id must start with a letter or digit and use only letters, digits, "
            "'_', '.' or '-' (at most 100 characters)"
        )
    return v


MAX_API_KEY_LENGTH = 4096


def check_api_key(key: str) -> None:
    """The one rule for a key typed by a user: it goes into an HTTP header, so no
    whitespace, NUL or other control characters. The message never echoes the key."""
    if not isinstance(key, str) or not key or len(key) > MAX_API_KEY_LENGTH or not key.isprintable() or any(
            c.isspace() for c in key):
        raise ValueError(f"api_key must be a non-empty string without whitespace or control characters "
                         f"(at most {MAX_API_KEY_LENGTH} characters)")


def mask_api_key(key: str) -> str:
    """What a person may see of a key: enough to recognise it, never enough to use it."""
    if len(key) <= 12:
        return "***"
    return f"{key[:3]}...{key[-4:]}"


class ApiFormat(str, Enum):
    """The wire format an API model's provider speaks (objs/dialects translates the others to
    and from OpenAI chat completions, the gateway's own language)."""

    OPENAI = "openai"  # chat completions: POST {base_url}/chat/completions, Bearer
    OPENAI_RESPONSES = "openai_responses"  # POST {base_url}/responses, Bearer
    ANTHROPIC = "anthropic"  # POST {base_url}/messages, x-api-key + anthropic-version
    GEMINI = "gemini"  # POST {base_url}/models/{model}:generateContent, x-goog-api-key

    def __str__(self) -> str:
        return self.value


class ApiModelAlias(BaseModel):
    """A registered provider: where it is, which models it serves, under which names."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    id: str
    api_format: ApiFormat = ApiFormat.OPENAI
    base_url: str
    models: list[str] = Field(default_factory=list)
    prefix: str | None = None
    forward_all_with_prefix: bool = False
    created_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)

    @field_validator("id")
    @classmethod
    def _check_id(cls, v: str) -> str:
        return check_api_model_id(v)

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, v: str, info: ValidationInfo) -> str:
        return v if _stored(info) else normalize_base_url(v)

    @field_validator("models")
    @classmethod
    def _check_models(cls, v: list[str], info: ValidationInfo) -> list[str]:
        seen: set[str] = set()
        out: list[str] = []
        for m in v:
            m = m.strip()
            if not m:
                raise ValueError("model names must not be empty")
            if not _stored(info) and (len(m) > MAX_MODEL_NAME_LENGTH or not m.isprintable()):
                raise ValueError(f"model names must be printable text (no NUL or line breaks) of at most "
                                 f"{MAX_MODEL_NAME_LENGTH} characters")
            if m not in seen:  # keep the user's order, drop repeats
                seen.add(m)
                out.append(m)
        return out

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None or v == "":
            return None
        if any(c.isspace() for c in v):
            raise ValueError("prefix must not contain whitespace")
        if not v.isprintable() and not _stored(info):
            raise ValueError("prefix must not contain NUL or other control characters")
        if len(v) > 64:
            raise ValueError("prefix must be at most 64 characters")
        return v

    @model_validator(mode="after")
    def _check_forwarding(self) -> ApiModelAlias:
        if self.forward_all_with_prefix and not self.prefix:
            raise ValueError("forward_all_with_prefix needs a prefix")
        if not self.models and not self.forward_all_with_prefix:
            raise ValueError("models must not be empty unless forward_all_with_prefix is set")
        return self

    @field_serializer("created_at", "updated_at")
    def _rfc3339(self, v: datetime) -> str:
        return v.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")

    # -- routing -----------------------------------------------------------------------

    def served_names(self) -> list[str]:
        """The model names this provider answers to (prefix applied), in listed order."""
        p = self.prefix or ""
        return [p + m for m in self.models]

    def upstream_model_for(self, model: str) -> str | None:
        """The upstream id for `model`, or None when this provider does not serve it."""
        p = self.prefix or ""
        if model.startswith(p):
            stripped = model[len(p):]
            if stripped in self.models:
                return stripped
            if self.forward_all_with_prefix and stripped:
                return stripped
        return None
