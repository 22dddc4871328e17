"""Handlers ask jupyter_server's authorizer: a deployment that denies the `bodhi_nb`
resources (e.g. a read-only JupyterHub role) gets 403 on every route, even with a token;
one that denies only `bodhi_nb.manage` (the hub service's non-admins) keeps the gateway's
use and loses exactly the management routes."""

from __future__ import annotations

import json

import pytest
from jupyter_server.auth.authorizer import Authorizer

from tests.route_table import every_route


class DenyBodhi(Authorizer):
    def is_authorized(self, handler, user, action, resource):  # type: ignore[no-untyped-def]
        return resource not in ("bodhi_nb", "bodhi_nb.manage")


@pytest.fixture
def jp_server_config(jp_server_config):
    cfg = json.loads(json.dumps(jp_server_config))
    cfg["ServerApp"]["authorizer_class"] = DenyBodhi
    return cfg


async def test_denied_resource_is_refused_everywhere(api):
    for method, path in every_route():
        code, data, _ = await api(method, path, {} if method in ("POST", "PUT") else None)
        assert code == 403, (method, path, code)
        assert data["error"]["type"] == "permission_error"
