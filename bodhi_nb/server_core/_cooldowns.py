"""Private: which router-alias targets are cooling down, in this process's memory.

A target that answered 429, 5xx or could not be reached is skipped until its cooldown
ends, so a rate-limited provider gets no requests while it asked for none. The state is
per process on purpose: it is a hint about the recent past, cheap to lose on restart,
and never worth a file lock on the request path. Keyed by target model name, so every
router alias sharing a provider respects its limit. The clock is injectable, so tests
move time instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

__all__ = ["Cooldowns"]


class Cooldowns:
    """Target name -> the monotonic time it is ready again."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()  # the server's loop and a kernel's I/O thread may share one

    def __repr__(self) -> str:
        return f"Cooldowns({len(self._until)} tracked)"

    def cool(self, target: str, seconds: float) -> None:
        """Skip `target` for `seconds` from now (a longer cooldown already running is kept)."""
        if seconds <= 0:
            return
        with self._lock:
            end = self.clock() + seconds
            self._until[target] = max(self._until.get(target, 0.0), end)

    def ready(self, target: str) -> None:
        """`target` answered: it is ready now, whatever was noted before."""
        with self._lock:
            self._until.pop(target, None)

    def remaining(self, target: str) -> float:
        """Seconds until `target` may be tried again (0.0: ready now)."""
        with self._lock:
            end = self._until.get(target)
            if end is None:
                return 0.0
            left = end - self.clock()
            if left <= 0:
                del self._until[target]
                return 0.0
            return left

    def ready_at(self, target: str) -> datetime | None:
        """When `target` is ready again, as a UTC wall-clock time (None: ready now)."""
        left = self.remaining(target)
        return None if left <= 0 else datetime.now(timezone.utc) + timedelta(seconds=left)

    def clear(self) -> None:
        with self._lock:
            self._until.clear()
