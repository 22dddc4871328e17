"""Every (method, path) the gateway serves, derived from the one route table.

Tests that must cover every route (auth, XSRF, authorizer, hostile input) use this, so a
new route is covered the moment it is added to `bodhi_nb.http.extension.ROUTES`.
"""

from __future__ import annotations

import re

from bodhi_nb.http.extension import ROUTES

_PARAM = re.compile(r"\(\?P<\w+>[^)]*\)")


def every_route(sample: str = "x") -> list[tuple[str, str]]:
    """(METHOD, path under bodhi/v1/) for every documented operation; path parameters get `sample`."""
    out = []
    for h in ROUTES:
        for method in h.openapi:
            out.append((method.upper(), _PARAM.sub(sample, h.path)))
    assert len(out) >= 16, out  # the table is really read
    return out
