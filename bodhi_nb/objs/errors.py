"""Error types shared by every layer.

Each error knows the OpenAI error envelope it becomes on the wire (type, code, HTTP
status), so handlers never translate exceptions by hand and a Python caller sees the
same words an HTTP client does. Messages are written for the user; none of them may
contain an API key (callers pass ids, never secrets).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = [
    "BodhiError",
    "InvalidRequestError",
    "NotFoundError",
    "ModelNotFound",
    "ConflictError",
    "UpstreamError",
    "LocalEngineUnavailable",
    "StoreError",
    "WrongMasterKeyError",
    "DecryptionError",
    "MasterKeyRotatedError",
    "BudgetExceeded",
    "StructuredOutputError",
    "TargetsCoolingDown",
    "PullCancelled",
    "PromptError",
    "PayloadTooLarge",
    "validation_message",
]


def validation_message(exc: ValidationError) -> tuple[str, str | None]:
    """A one-line message naming the first bad field, and that field (for `param`).

    The message never echoes the input value, so a key typed into the wrong field
    cannot leak through an error.
    """
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return (f"{where}: {msg}" if where else msg), (where or None)


class BodhiError(Exception):
    """Base of every bodhi_nb error; carries its OpenAI envelope fields."""

    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "api_error"
    default_code: ClassVar[str | None] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        if status is not None:
            self.status = status  # type: ignore[misc]
        # Response headers worth keeping (e.g. Retry-After from an upstream 429).
        self.headers: dict[str, str] = dict(headers or {})

    def to_envelope(self) -> dict[str, Any]:
        """The OpenAI error body: {"error": {message, type, param, code}}."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status}, code={self.code!r})"


class InvalidRequestError(BodhiError):
    """The caller sent something we cannot accept (bad JSON, bad field, bad value)."""

    status = 400
    error_type = "invalid_request_error"
    default_code = "invalid_request"

    @classmethod
    def from_validation(cls, exc: ValidationError, status: int = 422) -> InvalidRequestError:
        """The one mapping of a pydantic ValidationError, used by every surface."""
        msg, param = validation_message(exc)
        return cls(msg, param=param, status=status, code="validation_error")


class NotFoundError(BodhiError):
    """A named record (api model, alias) does not exist."""

    status = 404
    error_type = "not_found_error"
    default_code = "not_found"


class ModelNotFound(NotFoundError):
    """No API model, user alias or discovered model serves this model name."""

    error_type = "invalid_request_error"
    default_code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model '{model}' does not exist: no API model, user alias or local model serves it.",
            param="model",
        )
        self.model = model


class ConflictError(BodhiError):
    """A unique value (api model id, prefix, alias name) is already taken."""

    status = 409
    error_type = "invalid_request_error"
    default_code = "conflict"


class UpstreamError(BodhiError):
    """The provider (remote API or local engine) failed or could not be reached."""

    status = 502
    error_type = "upstream_error"
    default_code = "upstream_error"


class LocalEngineUnavailable(BodhiError):
    """A local model was asked for but llama.cpp cannot serve it here."""

    status = 503
    error_type = "server_error"
    default_code = "local_engine_unavailable"


class StoreError(BodhiError):
    """The encrypted store cannot be read or written."""

    status = 500
    error_type = "server_error"
    default_code = "store_error"


class WrongMasterKeyError(StoreError):
    """The master secret does not open this store (key-check record failed)."""

    default_code = "wrong_master_key"


class DecryptionError(StoreError):
    """A stored ciphertext failed authentication (tampered, or moved to another record)."""

    default_code = "decryption_failed"


class MasterKeyRotatedError(StoreError):
    """Another process rotated the master key and this process cannot load the new one.

    503: the store is fine, this process is stale; a restart with the new secret fixes it.
    """

    status = 503
    default_code = "master_key_rotated"


class BudgetExceeded(BodhiError):
    """Today's usage budget (USD, UTC day) is spent; priced models refuse until it is raised."""

    status = 429
    error_type = "insufficient_quota"
    default_code = "budget_exceeded"


class StructuredOutputError(BodhiError):
    """The reply does not match the requested `response_format` (not JSON, or not valid
    against the schema). `.raw` holds the reply text as the model wrote it, so nothing
    the model produced is lost; a retry or a larger `max_tokens` usually fixes it."""

    status = 502
    error_type = "upstream_error"
    default_code = "structured_output_invalid"

    def __init__(self, message: str, raw: str, *, param: str | None = "response_format") -> None:
        super().__init__(message, param=param)
        self.raw = raw



class TargetsCoolingDown(UpstreamError):
    """Every target of a router alias is cooling down: retry after `retry_after` seconds.

    An `UpstreamError` with status 429, so every retrying caller (`Bodhi.map`, OpenAI
    clients) treats it as the rate limit it is and waits for the Retry-After header.
    """

    status = 429
    error_type = "rate_limit_error"
    default_code = "router_targets_cooling_down"

    def __init__(self, alias: str, retry_after: int, detail: str = "") -> None:
        said = f" ({detail})" if detail else ""
        super().__init__(f"Every target of router alias '{alias}' is cooling down after failures{said}; "
                         f"retry after {retry_after} s.", param="model",
                         headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class PullCancelled(BodhiError):
    """The pull was stopped before the file was complete; its partial file is kept for the next pull."""

    status = 409
    error_type = "invalid_request_error"
    default_code = "pull_cancelled"


class PromptError(BodhiError):
    """A `%%bodhi` cell's `{name}` placeholders could not be filled."""

    status = 400
    error_type = "invalid_request_error"
    default_code = "invalid_prompt"


class PayloadTooLarge(BodhiError):
    """An upload over the server's size limit (nothing of it is kept)."""

    status = 413
    error_type = "invalid_request_error"
    default_code = "file_too_large"
