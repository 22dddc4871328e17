"""The contract's base: `parse`, the one place a ValidationError becomes our error, and the
strict base of management objects (unknown fields are a 422 there)."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ...objs.errors import InvalidRequestError

__all__ = ["Strict", "parse"]

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


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
