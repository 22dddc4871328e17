"""Private: what every OpenAI-compatible handler does with an open upstream response.

Chat completions and embeddings relay the same way: an upstream error already in the
OpenAI envelope passes as it is (its key masked by the response), any other error status
becomes our envelope, and the status line and filtered headers are copied with the
gateway's own overhead in `x-bodhi-overhead-ms`.
"""

from __future__ import annotations

import time

from ..server_core.gateway import UpstreamResponse, relayable_error_body
from ._base import BodhiHandler

__all__ = ["UpstreamRelayHandler"]


class UpstreamRelayHandler(BodhiHandler):
    """A handler that relays an upstream response."""

    async def error_body(self, resp: UpstreamResponse) -> bytes:
        """The body of a non-2xx upstream answer to relay, or raise it as our error."""
        return await relayable_error_body(resp)

    def start_relay(self, resp: UpstreamResponse) -> None:
        """The upstream's status and headers, before its body."""
        self.set_status(resp.status)
        self.clear_header("Content-Type")
        for k, v in resp.headers.items():
            self.set_header(k, v)
        if resp.is_event_stream:
            self.set_header("Cache-Control", "no-cache")
            self.set_header("X-Accel-Buffering", "no")
        overhead = (time.perf_counter() - self._t0 - resp.upstream_seconds) * 1000
        self.set_header("x-bodhi-overhead-ms", f"{max(overhead, 0.0):.3f}")
