"""Validate a JSON body against a schema of OpenAI's own OpenAPI document (vendored in
tests/resources/openapi/, see its README), so a test proves a translated body is what the
published API describes rather than what we believe it to be.

`validate("Response", body)` resolves `#/components/schemas/Response` with every `$ref`
through a `referencing` registry over the whole document (OpenAPI 3.1 schemas are JSON
Schema 2020-12) and raises `SchemaMismatch` (an AssertionError naming the failing field's
path; `.error` is the `jsonschema.ValidationError`) on a mismatch. Inside a union it
reports the branch whose `type` discriminator matched, not an arbitrary branch. `closed=True` also refuses top-level fields the schema does not
name (`unevaluatedProperties: false`), which OpenAPI itself leaves open.

Two readings of OpenAPI that plain JSON Schema does not share are applied when loading:
- `nullable: true` (an OpenAPI 3.0 keyword some of the document still uses) becomes
  `anyOf: [<schema>, {"type": "null"}]`;
- `oneOf` becomes `anyOf`: the document's unions are discriminated by `type` and their
  branches overlap (a user message with list content is both an `EasyInputMessage` and an
  `InputMessage`), which JSON Schema's exactly-one rule would refuse although the API accepts it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry
from referencing.jsonschema import DRAFT202012

__all__ = ["DOCUMENT", "SchemaMismatch", "schema_names", "validate"]

DOCUMENT = Path(__file__).resolve().parent / "openapi" / "openai-openapi.yaml"
_URI = "urn:openai-openapi"


class SchemaMismatch(AssertionError):
    """The instance does not match the schema; `.error` is the underlying jsonschema error."""

    def __init__(self, schema_name: str, error: jsonschema.ValidationError) -> None:
        where = "".join(f"[{p!r}]" for p in error.absolute_path) or "(root)"
        super().__init__(f"{schema_name}: {where}: {error.message}")
        self.error = error


def _discriminator_missed(errors: list[jsonschema.ValidationError]) -> bool:
    """Whether a union branch failed on the instance's kind itself (its `type` field or JSON type)."""
    for e in errors:
        if list(e.relative_path) == ["type"] and e.validator in ("enum", "const"):
            return True
        if not e.relative_path and e.validator == "type":
            return True
    return False


def _explain(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """Descend through failed unions into the branch meant for the instance, when there is one."""
    while error.validator == "anyOf" and error.context:
        branches: dict[object, list[jsonschema.ValidationError]] = {}
        for e in error.context:
            branches.setdefault(e.relative_schema_path[0], []).append(e)
        meant = [errs for errs in branches.values() if not _discriminator_missed(errs)]
        if len(meant) != 1:
            break
        error = max(meant[0], key=jsonschema.exceptions.relevance)
    return error


def _normalise(node: Any) -> Any:
    if isinstance(node, list):
        return [_normalise(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _normalise(v) for k, v in node.items()}
    if "oneOf" in out:
        out["anyOf"] = out.pop("oneOf")
    if out.pop("nullable", False) is True:
        out = {"anyOf": [out, {"type": "null"}]}
    return out


@lru_cache(maxsize=1)
def _document() -> dict[str, Any]:
    with DOCUMENT.open("rb") as f:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        doc = yaml.load(f, Loader=loader)  # noqa: S506 - a safe loader
    return _normalise(doc)


@lru_cache(maxsize=1)
def _registry() -> Registry:
    return Registry().with_resource(_URI, DRAFT202012.create_resource(_document()))


@lru_cache(maxsize=64)
def _validator(schema_name: str, closed: bool) -> jsonschema.Draft202012Validator:
    if schema_name not in _document()["components"]["schemas"]:
        raise KeyError(f"no schema #/components/schemas/{schema_name} in {DOCUMENT.name}")
    schema: dict[str, Any] = {"$ref": f"{_URI}#/components/schemas/{schema_name}"}
    if closed:
        schema["unevaluatedProperties"] = False
    return jsonschema.Draft202012Validator(schema, registry=_registry())


def schema_names() -> list[str]:
    """Every name under `#/components/schemas` in the vendored document."""
    return sorted(_document()["components"]["schemas"])


def validate(schema_name: str, instance: dict[str, Any], *, closed: bool = False) -> None:
    """Raise `SchemaMismatch` unless `instance` matches `#/components/schemas/<schema_name>`
    (with `closed`, also unless every top-level field is one the schema names)."""
    errors = list(_validator(schema_name, closed).iter_errors(instance))
    if errors:
        unions = [e for e in errors if e.validator == "anyOf"]
        raise SchemaMismatch(schema_name, _explain(unions[0]) if unions else jsonschema.exceptions.best_match(errors))
