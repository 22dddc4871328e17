"""The HTTP request and response objects, re-exported from the contract.

They live in `server_core/contract.py` because the operations layer parses every
surface's input with them (docs/ARCHITECTURE.md); handlers import them from here.
"""

from __future__ import annotations

from ..server_core.contract import *  # noqa: F403
from ..server_core.contract import __all__  # noqa: F401
