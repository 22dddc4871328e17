"""Handlers ask jupyter_server's authorizer: a deployment that denies the `bodhi_nb`
resource (e.g. a read-only JupyterHub role) gets 403 on every route, even with a token."""

from __future__ import annotations

import json

import pytest
from jupyter_server.auth.authorizer import Authorizer


class DenyBodhi(Authorizer):
    def is_authorized(self, handler, user, action, resource):  # type: ignore[no-untyped-def]
        return resource != "bodhi_nb"


@pytest.fixture
def jp_server_config(jp_server_config):
    cfg = json.loads(json.dumps(jp_server_config))
    cfg["ServerApp"]["authorizer_class"] = DenyBodhi
    return cfg


async def test_denied_resource_is_refused_everywhere(api):
    for method, path in [("GET", "models"), ("POST", "chat/completions"), ("GET", "api-models"),
                         ("POST", "api-models"), ("DELETE", "api-models/x"), ("GET", "aliases"),
                         ("GET", "openapi.json")]:
        code, data, _ = await api(method, path, {} if method in ("POST", "PUT") else None)
        assert code == 403, (method, path, code)
        assert data["error"]["type"] == "permission_error"
