"""The contract: request and response objects every surface shares (pydantic).

The operations layer parses every input with these models (HTTP bodies, `Bodhi`
arguments, CLI options, widget forms), every response is serialised through them, and
the OpenAPI document is generated from them, so the document cannot drift from what
the server does (docs/ARCHITECTURE.md, "One HTTP contract"). Grouped by what they
describe: management objects, the OpenAI-compatible ones, usage, and the other
dialects clients speak (Anthropic Messages, OpenAI Responses).
"""

from __future__ import annotations

from .base import parse
from .batches import *  # noqa: F403
from .batches import __all__ as _batches
from .dialects import *  # noqa: F403
from .dialects import __all__ as _dialects
from .management import *  # noqa: F403
from .management import __all__ as _management
from .openai import *  # noqa: F403
from .openai import __all__ as _openai
from .usage import *  # noqa: F403
from .usage import __all__ as _usage

__all__ = ["parse", *_management, *_openai, *_usage, *_dialects, *_batches]
