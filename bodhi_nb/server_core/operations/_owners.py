"""Private: who may see a file, a batch or a stored response (docs/ARCHITECTURE.md, "The JupyterHub service").

On a single-user server everything in BODHI_HOME is its one user's. In the hub service many
users share one BODHI_HOME, so what a request makes belongs to its JupyterHub user, and
another user's is as unknown as a missing one (a 404: an id tells nothing about anyone else).
"""

from __future__ import annotations

from typing import Any

from ..origin import current_hub_user

__all__ = ["Owners"]


class Owners:
    def __init__(self, per_user: bool = False) -> None:
        self.per_user = per_user

    def current(self) -> str | None:
        """The owner of what this request makes (None on a single-user server)."""
        hub = current_hub_user() if self.per_user else None
        return hub.name if hub is not None else None

    def groups(self) -> tuple[str, ...]:
        """The owner's JupyterHub groups, as the hub said for this request (for group budgets)."""
        hub = current_hub_user() if self.per_user else None
        return hub.groups if hub is not None else ()

    def scope(self) -> dict[str, Any]:
        """The store's arguments that limit a lookup to this request's user, when per user."""
        return {"owner": self.current(), "scoped": self.per_user}

    def sees(self, owner: str | None) -> bool:
        return not self.per_user or owner == self.current()
