"""Layer 1: pure domain objects. No I/O here: no httpx, tinydb or tornado imports."""

from .alias import ALIAS_NAME_PATTERN, Alias, AliasSource, ContextParams, RequestParams
from .api_model_alias import API_MODEL_ID_PATTERN, ApiFormat, ApiModelAlias, mask_api_key, normalize_base_url, utc_now
from .errors import (
    BodhiError,
    ConflictError,
    DecryptionError,
    InvalidRequestError,
    LocalEngineUnavailable,
    ModelNotFound,
    NotFoundError,
    StoreError,
    StructuredOutputError,
    UpstreamError,
    WrongMasterKeyError,
)
from .model_alias import DiscoveredModelAlias, LocalModelAlias, UserModelAlias

__all__ = [
    "ALIAS_NAME_PATTERN",
    "API_MODEL_ID_PATTERN",
    "Alias",
    "AliasSource",
    "ApiFormat",
    "ApiModelAlias",
    "BodhiError",
    "ConflictError",
    "ContextParams",
    "DecryptionError",
    "DiscoveredModelAlias",
    "InvalidRequestError",
    "LocalEngineUnavailable",
    "LocalModelAlias",
    "ModelNotFound",
    "NotFoundError",
    "RequestParams",
    "StoreError",
    "StructuredOutputError",
    "UpstreamError",
    "UserModelAlias",
    "WrongMasterKeyError",
    "mask_api_key",
    "normalize_base_url",
    "utc_now",
]
