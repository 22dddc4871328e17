"""When and whether to retry an upstream request: the rules every retrying caller shares.

Only 429, upstream 5xx and connection failures are worth another attempt; other 4xx
answers will not change. The upstream's own hints come first: `Retry-After` (seconds or
an HTTP date) and the `x-ratelimit-reset-*` headers (OpenAI's "6m0s"/"20ms" durations,
plain seconds or an epoch time). Without hints the wait is exponential backoff with
jitter, so many clients that failed together do not retry together.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
import time

from ..objs.errors import BodhiError, UpstreamError

__all__ = ["BACKOFF_BASE", "BACKOFF_CAP", "RateGate", "hinted_delay", "retry_delay", "retryable"]

BACKOFF_BASE = 0.5  # seconds; attempt n waits between base*2**(n-1)/2 and base*2**(n-1)
BACKOFF_CAP = 60.0

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def _duration(value: str, now: float) -> float | None:
    """`x-ratelimit-reset-*`: "6m0s", "20ms", "1.5s", plain seconds, or an epoch time."""
    v = value.strip()
    try:
        n = float(v)
        return n - now if n > 1e9 else n
    except ValueError:
        pass
    parts = _DURATION.findall(v)
    if not parts or "".join(a + u for a, u in parts) != v:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(a) * scale[u] for a, u in parts)


def hinted_delay(headers: dict[str, str], now: float | None = None) -> float | None:
    """Seconds the upstream asked us to wait: Retry-After (seconds or HTTP date), else the
    longest x-ratelimit-reset-* hint; None when it said nothing usable."""
    now = time.time() if now is None else now
    h = {k.lower(): v for k, v in headers.items()}
    ra = h.get("retry-after")
    if ra is not None:
        try:
            return max(0.0, float(ra))
        except ValueError:
            try:
                when: float = email.utils.parsedate_to_datetime(ra).timestamp()
                return max(0.0, when - now)
            except (TypeError, ValueError, IndexError):
                pass
    resets = [d for k, v in h.items() if k.startswith("x-ratelimit-reset") and (d := _duration(v, now)) is not None]
    return max(0.0, max(resets)) if resets else None


def retryable(exc: BaseException) -> bool:
    """Only 429, upstream 5xx and connection failures are worth another attempt."""
    return isinstance(exc, UpstreamError) and (exc.status == 429 or exc.status >= 500)


def retry_delay(exc: BodhiError, attempt: int, rng: random.Random | None = None) -> float:
    """Never earlier than the upstream asked; otherwise exponential backoff with jitter."""
    rng = rng or random.Random()
    hinted = hinted_delay(exc.headers)
    if hinted is not None:
        return hinted + rng.uniform(0.0, min(1.0, 0.05 + hinted * 0.1))
    step: float = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** (attempt - 1))
    return step / 2 + rng.uniform(0.0, step / 2)


class RateGate:
    """A pause shared by every worker of one job: a 429 closes it until the wait is over."""

    def __init__(self) -> None:
        self.until = 0.0

    def hold(self, seconds: float) -> None:
        self.until = max(self.until, time.monotonic() + seconds)

    async def wait(self) -> None:
        while (left := self.until - time.monotonic()) > 0:  # noqa: ASYNC110 - sleeps to a deadline that a later 429 may extend
            await asyncio.sleep(left)
