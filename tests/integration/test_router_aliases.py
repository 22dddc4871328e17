"""Router aliases against a real OpenAI-compatible upstream on 127.0.0.1.

Two API models on one fake upstream (tests/resources/fake_openai.py) stand for two
providers: `p1/...` serves models that answer 429 with Retry-After: 7, 503, 404 and a
stream that breaks off, `p2/echo-2` answers. A third API model points at a closed port
(connection failure). The upstream counts the chat requests it receives per model, so
"a cooling target gets no request" is checked where the requests would arrive. Cooldown
time is a fake clock the test moves; nothing sleeps.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import httpx
import pandas as pd
import pytest

from bodhi_nb.notebook.client import Bodhi
from bodhi_nb.objs import ConflictError, InvalidRequestError, NotFoundError, UpstreamError
from bodhi_nb.objs.errors import TargetsCoolingDown
from bodhi_nb.server_core._cooldowns import Cooldowns
from bodhi_nb.server_core.model_router import Router
from bodhi_nb.services.db import ConfigStore, migrations
from tests.conftest import FAST_KDF, TEST_KEY, TEST_SECRET, FakeUpstream

P1_MODELS = ["status-429", "status-503", "status-404", "cut", "echo"]


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def up():
    u = FakeUpstream(TEST_KEY)
    yield u
    u.stop()


def counts(up) -> dict[str, int]:
    return httpx.get(f"http://127.0.0.1:{up.port}/_counts", trust_env=False).json()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def add_providers(b: Bodhi, up) -> None:
    b.api_models.create("p1", up.base_url, api_key=TEST_KEY, models=P1_MODELS, prefix="p1/")
    b.api_models.create("p2", up.base_url, api_key=TEST_KEY, models=["echo-2"], prefix="p2/")
    b.api_models.create("dead", f"http://127.0.0.1:{closed_port()}/v1", api_key=TEST_KEY, models=["gone"])


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def b(bodhi_home, up, clock):
    httpx.post(f"http://127.0.0.1:{up.port}/_counts", trust_env=False)
    bodhi = Bodhi(bodhi_home, master_secret=TEST_SECRET, kdf_iterations=FAST_KDF)
    bodhi.services.router.cooldowns.clock = clock
    add_providers(bodhi, up)
    yield bodhi
    bodhi.close()


def hi(b: Bodhi, model: str, text: str = "hi") -> dict:
    return b.completion(model, text)


# -- the domain rules' neighbours: cooldown memory and the store -----------------------------------


def test_cooldowns_keep_the_longer_wait_and_forget_a_target_that_answered(clock):
    c = Cooldowns(clock)
    c.cool("a", 10)
    c.cool("a", 3)  # a shorter hint never shortens a cooldown already running
    assert c.remaining("a") == 10 and c.ready_at("a") is not None
    clock.advance(9.5)
    assert c.remaining("a") == pytest.approx(0.5)
    c.ready("a")
    assert c.remaining("a") == 0.0 and c.ready_at("a") is None
    c.cool("b", 0)  # no wait asked: never cooling
    assert c.remaining("b") == 0.0
    c.cool("b", 1)
    clock.advance(1)
    assert c.remaining("b") == 0.0


def test_store_table_is_migrated_shared_across_processes_and_reverted(bodhi_home):
    one = ConfigStore(bodhi_home, TEST_SECRET, kdf_iterations=FAST_KDF)
    from bodhi_nb.objs.router_alias import RouterAliasSpec
    from bodhi_nb.services.db.router_aliases import RouterAliasStore

    store = RouterAliasStore(one.storage)
    store.create(RouterAliasSpec(alias="r", targets=["a", "b"]))
    # another process (its own ConfigStore on the same file) sees it, and its writes are seen here
    code = ("import sys; from bodhi_nb.services.db import ConfigStore;"
            "from bodhi_nb.services.db.router_aliases import RouterAliasStore;"
            f"db = ConfigStore(sys.argv[1], {TEST_SECRET!r}, kdf_iterations={FAST_KDF});"
            "s = RouterAliasStore(db.storage); print(s.get('r').targets);"
            "s.update('r', {'targets': ['b', 'a'], 'cooldown_seconds': 5})")
    out = subprocess.run([sys.executable, "-c", code, str(bodhi_home)], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "BODHI_NO_KEYRING": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['a', 'b']"
    got = store.get("r")
    assert got.targets == ["b", "a"] and got.cooldown_seconds == 5 and got.updated_at > got.created_at
    assert migrations.migrate(one.storage, 5) == 5 and "router_aliases" not in one.storage.snapshot()
    assert store.find("r") is None
    assert migrations.migrate(one.storage) == migrations.LATEST == 6 and store.list() == []
    one.close()


# -- routing: fallback, cooldowns, all-cooling ------------------------------------------------------


def test_a_cooling_target_is_skipped_and_gets_no_requests(b, up, clock):
    b.router_aliases.create("r", ["p1/status-429", "p2/echo-2"])
    first = hi(b, "r")
    assert first["choices"][0]["message"]["content"] == "echo: hi" and first.target == "p2/echo-2"
    assert counts(up) == {"status-429": 1, "echo-2": 1}
    states = {t.name: t for t in b.explain("r")[0].targets}
    assert states["p1/status-429"].state == "cooling" and states["p2/echo-2"].state == "ready"
    for i in range(5):
        assert hi(b, "r", f"again {i}").target == "p2/echo-2"
    assert counts(up) == {"status-429": 1, "echo-2": 6}  # nothing more reached the cooling target
    clock.advance(6.9)  # the upstream said Retry-After: 7
    hi(b, "r")
    assert counts(up)["status-429"] == 1
    clock.advance(0.2)
    assert hi(b, "r").target == "p2/echo-2"
    assert counts(up)["status-429"] == 2  # ready again: tried first again, and it is still limiting


def test_without_honor_retry_after_the_own_cooldown_applies(b, up, clock):
    b.router_aliases.create("r", ["p1/status-429", "p2/echo-2"], cooldown_seconds=100, honor_retry_after=False)
    hi(b, "r")
    clock.advance(50)  # far past the upstream's Retry-After: 7
    hi(b, "r")
    assert counts(up) == {"status-429": 1, "echo-2": 2}
    clock.advance(51)
    hi(b, "r")
    assert counts(up)["status-429"] == 2


def test_every_target_cooling_is_429_with_retry_after(b, up, clock):
    b.router_aliases.create("r", ["p1/status-429", "p1/status-503"], cooldown_seconds=30)
    with pytest.raises(TargetsCoolingDown) as ei:
        hi(b, "r")
    err = ei.value
    assert err.status == 429 and err.headers == {"Retry-After": "7"}  # the nearer of 7 s (429) and 30 s (503)
    assert "p1/status-429: 429" in err.message and "p1/status-503: 503" in err.message
    assert err.to_envelope()["error"]["code"] == "router_targets_cooling_down"
    assert counts(up) == {"status-429": 1, "status-503": 1}
    clock.advance(3)
    with pytest.raises(TargetsCoolingDown) as ei:
        hi(b, "r")
    assert ei.value.headers["Retry-After"] == "4" and counts(up) == {"status-429": 1, "status-503": 1}


def test_connection_failure_falls_back_and_cools_the_dead_target(b, up, clock):
    b.router_aliases.create("r", ["gone", "p2/echo-2"], cooldown_seconds=20)
    assert hi(b, "r").target == "p2/echo-2"
    state = b.explain("r")[0].targets[0]
    assert state.name == "gone" and state.state == "cooling" and state.served_by == "api:dead"
    assert b.router_aliases.get("r")["state"][0]["state"] == "cooling"
    clock.advance(21)
    assert b.explain("r")[0].targets[0].state == "ready"


def test_other_4xx_are_the_callers_and_do_not_fall_back(b, up):
    b.router_aliases.create("r", ["p1/status-404", "p2/echo-2"])
    with pytest.raises(UpstreamError) as ei:
        hi(b, "r")
    assert ei.value.status == 404
    with pytest.raises(UpstreamError):
        hi(b, "r")
    assert counts(up) == {"status-404": 2}  # never cooled, never passed on


def test_max_attempts_limits_tries_per_request(b, up):
    b.router_aliases.create("r", ["p1/status-503", "p2/echo-2"], max_attempts=1)
    with pytest.raises(UpstreamError) as ei:
        hi(b, "r")
    assert ei.value.status == 503 and counts(up) == {"status-503": 1}
    assert hi(b, "r").target == "p2/echo-2"  # the failed one cools; the next request's one try goes on


def test_unknown_targets_are_skipped_and_shown(b, up):
    b.router_aliases.create("r", ["nothing-serves-this", "p2/echo-2"])
    assert hi(b, "r").target == "p2/echo-2"
    assert b.explain("r")[0].targets[0].state == "unknown"
    b.router_aliases.create("r2", ["nothing-serves-this"])
    with pytest.raises(NotFoundError) as ei:
        hi(b, "r2")
    assert ei.value.code == "model_not_found" and "nothing-serves-this" in ei.value.message


def test_stream_falls_back_before_the_first_byte_only(b, up):
    b.router_aliases.create("r", ["p1/status-503", "p2/echo-2"])
    assert "".join(b.chat("r", "stream me", stream=True)) == "echo: stream me"
    assert counts(up) == {"status-503": 1, "echo-2": 1}
    b.router_aliases.create("r-cut", ["p1/cut", "p2/echo-2"])
    got = []
    with pytest.raises(UpstreamError, match="stream broke off|mid-stream"):
        for text in b.chat("r-cut", "x", stream=True):
            got.append(text)
    assert "".join(got) == "first second "  # the first target had started: no fallback after that
    assert counts(up)["echo-2"] == 1


def test_router_aliases_resolve_first_and_are_listed(b, up):
    b.router_aliases.create("p2/echo-2", ["p1/echo"])  # shadows the API model's name on purpose
    assert isinstance(b.route("p2/echo-2"), Router)
    cands = b.explain("p2/echo-2")
    assert [c.source for c in cands] == ["router", "api"] and cands[0].won and not cands[1].won
    assert hi(b, "p2/echo-2").target == "p1/echo"
    entries = {e.id: e for e in b.model_entries()}
    assert entries["p2/echo-2"].source == "router" and entries["p2/echo-2"].owned_by == "router"
    assert b.models()[0] == "p2/echo-2"


# -- map over a router alias ----------------------------------------------------------------------


def test_map_over_a_router_alias_spreads_past_a_rate_limited_provider(b, up):
    b.router_aliases.create("r", ["p1/status-429", "p2/echo-2"])
    rows = [f"row {i}" for i in range(24)]
    out = b.map("r", rows, concurrency=4, progress=False)
    assert [r.text for r in out] == [f"echo: {t}" for t in rows] and all(r.error is None for r in out)
    assert {r.target for r in out} == {"p2/echo-2"}  # each row says which target answered
    c = counts(up)
    assert c["echo-2"] == 24 and 1 <= c["status-429"] <= 4  # only requests already in flight met it
    frame = pd.DataFrame({"review": rows[:5]})
    again = b.map("r", frame, template="{review}", progress=False)
    assert list(again["reply"]) == [f"echo: {t}" for t in rows[:5]]
    assert counts(up) == c  # a re-run answers from the cache under the target that answered


def test_map_waits_for_retry_after_when_every_target_cools(b, up, clock):
    b.router_aliases.create("r", ["p1/status-503"], cooldown_seconds=1)
    out = b.map("r", ["a"], max_retries=0, progress=False)
    assert out[0].error is not None and "503" in out[0].error
    out = b.map("r", ["b"], max_retries=0, progress=False)
    assert "cooling down" in out[0].error and counts(up) == {"status-503": 1}


# -- management: facade rules -----------------------------------------------------------------------


def test_facade_crud_and_bad_input(b):
    r = b.router_aliases.create("r", ["p1/echo", "p2/echo-2"], cooldown_seconds=5)
    assert r["max_attempts"] == 2 and r["honor_retry_after"] and r["cooldown_seconds"] == 5
    assert [s["state"] for s in r["state"]] == ["ready", "ready"] and r["state"][0]["served_by"] == "api:p1"
    assert [x["alias"] for x in b.router_aliases.list()] == ["r"]
    u = b.router_aliases.update("r", targets=["p2/echo-2"], honor_retry_after=False)
    assert u["targets"] == ["p2/echo-2"] and u["max_attempts"] == 1 and u["cooldown_seconds"] == 5
    assert not b.router_aliases.get("r")["honor_retry_after"]
    with pytest.raises(InvalidRequestError) as ei:
        b.router_aliases.create("empty", [])
    assert ei.value.status == 422 and ei.value.param == "targets"
    with pytest.raises(ConflictError) as ei:
        b.router_aliases.create("r", ["p1/echo"])
    assert ei.value.status == 409
    with pytest.raises(NotFoundError) as ei:
        b.router_aliases.get("missing")
    assert ei.value.status == 404
    for bad, param in [(dict(alias="self", targets=["self"]), None), (dict(alias="d", targets=["a", "a"]), "targets"),
                       (dict(alias="bad name", targets=["a"]), "alias"),
                       (dict(alias="m", targets=["a"], max_attempts=2), None),
                       (dict(alias="n", targets=["r"]), "targets"),  # a router alias is not a target
                       (dict(alias="c", targets=["a"], cooldown_seconds=-1), "cooldown_seconds")]:
        with pytest.raises(InvalidRequestError) as ei:
            b.router_aliases.create(**bad)
        assert ei.value.status == 422 and ei.value.param == param, (bad, ei.value)
    with pytest.raises(NotFoundError):
        b.router_aliases.update("missing", targets=["a"])
    b.router_aliases.delete("r")
    with pytest.raises(NotFoundError):
        b.router_aliases.delete("r")
    assert b.router_aliases.list() == []


def test_panel_creates_edits_and_deletes(b):
    from bodhi_nb.notebook.widgets import RouterAliasesPanel, panel

    p = RouterAliasesPanel(b)
    assert "No router aliases yet" in p.table.value and "p2/echo-2" in p.targets.allowed_tags
    p.alias.value, p.targets.value, p.cooldown.value = "r", ["p1/echo", "p2/echo-2"], 9
    p._on_save()
    assert "Saved r" in p.status.value and p.selector.value == "r"
    assert b.router_aliases.get("r")["targets"] == ["p1/echo", "p2/echo-2"]
    assert "p1/echo (ready)" in p.table.value
    p.targets.value = ["p2/echo-2"]
    p._on_save()
    assert b.router_aliases.get("r")["targets"] == ["p2/echo-2"]
    p.selector.value = "+ new"
    p.alias.value, p.targets.value = "empty", []
    p._on_save()
    assert "targets" in p.status.value and "error" in p.status.value
    p.selector.value = "r"
    p.delete_btn.click()
    p.confirm_btn.click()
    assert b.router_aliases.list() == [] and p.selector.value == "+ new"
    tab = panel(b)
    assert tab.get_title(4) == "Router aliases" and isinstance(tab.children[4], RouterAliasesPanel)


def test_cli_lifecycle(bodhi_home, up):
    env = {**os.environ, "BODHI_HOME": str(bodhi_home), "BODHI_NO_KEYRING": "1"}
    env.pop("BODHI_ENCRYPTION_KEY", None)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "bodhi_nb.cli", *args], capture_output=True, text=True,
                              env=env, timeout=120)

    r = cli("router-aliases", "create", "r", "a", "b", "--cooldown-seconds", "5", "--no-honor-retry-after")
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)
    assert made["targets"] == ["a", "b"] and made["cooldown_seconds"] == 5 and not made["honor_retry_after"]
    r = cli("router-aliases", "create", "r", "a")
    assert r.returncode == 1 and r.stderr.startswith("error (409 conflict)")
    r = cli("router-aliases", "create", "e", "e")
    assert r.returncode == 1 and "error (422 validation_error)" in r.stderr
    r = cli("route", "r")
    assert r.returncode == 0 and r.stdout.startswith("-> router:r [router]") and "a: unknown" in r.stdout
    r = cli("router-aliases", "list")
    assert [x["alias"] for x in json.loads(r.stdout)] == ["r"]
    r = cli("router-aliases", "delete", "r")
    assert r.returncode == 0 and "deleted r" in r.stdout
    r = cli("router-aliases", "delete", "r")
    assert r.returncode == 1 and "error (404 not_found)" in r.stderr


# -- over HTTP -------------------------------------------------------------------------------------


@pytest.fixture
def server_clock(jp_serverapp) -> Clock:
    clock = Clock()
    jp_serverapp.web_app.settings["bodhi_nb.services"].router.cooldowns.clock = clock
    return clock


async def test_http_crud_envelopes_and_openapi(api, up):
    code, data, _ = await api("POST", "router-aliases", {"alias": "r", "targets": ["a", "b"], "max_attempts": 1})
    assert code == 201 and data["alias"] == "r" and data["max_attempts"] == 1
    assert [s["state"] for s in data["state"]] == ["unknown", "unknown"]
    code, data, _ = await api("POST", "router-aliases", {"alias": "r", "targets": ["a"]})
    assert code == 409 and data["error"]["code"] == "conflict" and data["error"]["param"] == "alias"
    code, data, _ = await api("POST", "router-aliases", {"alias": "x", "targets": []})
    assert code == 422 and data["error"]["param"] == "targets" and set(data["error"]) == {"message", "type",
                                                                                          "param", "code"}
    code, data, _ = await api("POST", "router-aliases", {"alias": "x", "targets": ["a"], "extra": 1})
    assert code == 422 and data["error"]["param"] == "extra"
    code, data, _ = await api("GET", "router-aliases/missing")
    assert code == 404 and data["error"]["type"] == "not_found_error"
    code, data, _ = await api("PUT", "router-aliases/r", {"targets": ["b", "a"], "max_attempts": None})
    assert code == 200 and data["targets"] == ["b", "a"] and data["max_attempts"] == 2
    code, data, _ = await api("PUT", "router-aliases/r", {"alias": "renamed"})
    assert code == 400 and data["error"]["param"] == "alias" and "cannot be renamed" in data["error"]["message"]
    code, data, _ = await api("PUT", "router-aliases/r", {"cooldown_seconds": "soon"})
    assert code == 422 and data["error"]["param"] == "cooldown_seconds"
    code, data, _ = await api("GET", "router-aliases")
    assert [r["alias"] for r in data["data"]] == ["r"]
    code, data, _ = await api("GET", "models")
    assert {"id": "r", "object": "model", "created": data["data"][0]["created"], "owned_by": "router"} in data["data"]
    code, doc, _ = await api("GET", "openapi.json")
    assert {"/router-aliases", "/router-aliases/{alias}"} <= set(doc["paths"])
    assert "RouterAliasRequest" in json.dumps(doc)
    code, data, _ = await api("DELETE", "router-aliases/r")
    assert code == 204
    code, data, _ = await api("DELETE", "router-aliases/r")
    assert code == 404


async def test_http_fallback_header_stream_and_all_cooling(api, up, server_clock):
    httpx.post(f"http://127.0.0.1:{up.port}/_counts", trust_env=False)
    for body in ({"id": "p1", "base_url": up.base_url, "api_key": TEST_KEY, "models": P1_MODELS, "prefix": "p1/"},
                 {"id": "p2", "base_url": up.base_url, "api_key": TEST_KEY, "models": ["echo-2"], "prefix": "p2/"}):
        assert (await api("POST", "api-models", body))[0] == 201
    await api("POST", "router-aliases", {"alias": "r", "targets": ["p1/status-429", "p2/echo-2"]})
    chat = {"model": "r", "messages": [{"role": "user", "content": "hi"}]}
    code, data, headers = await api("POST", "chat/completions", chat)
    assert code == 200 and data["choices"][0]["message"]["content"] == "echo: hi"
    assert headers["x-bodhi-target"] == "p2/echo-2"
    code, raw, headers = await api("POST", "chat/completions", {**chat, "stream": True})
    assert code == 200 and headers["x-bodhi-target"] == "p2/echo-2" and "data: [DONE]" in raw
    assert counts(up) == {"status-429": 1, "echo-2": 2}
    await api("POST", "router-aliases", {"alias": "all", "targets": ["p1/status-429", "p1/status-503"],
                                         "cooldown_seconds": 30})
    code, data, headers = await api("POST", "chat/completions", {**chat, "model": "all"})
    # p1/status-429 still cools from the first request (its 7 s); only p1/status-503 was tried
    assert code == 429 and headers["Retry-After"] == "7"
    assert data["error"]["code"] == "router_targets_cooling_down" and "p1/status-503: 503" in data["error"]["message"]
    server_clock.advance(5)
    code, data, headers = await api("POST", "chat/completions", {**chat, "model": "all", "stream": True})
    assert code == 429 and headers["Retry-After"] == "2"
    assert counts(up) == {"status-429": 1, "echo-2": 2, "status-503": 1}
    code, data, headers = await api("POST", "chat/completions", {**chat, "model": "p2/echo-2"})
    assert code == 200 and "x-bodhi-target" not in headers  # only router-alias responses carry it
    # a stream whose first target cannot be reached: the fallback happens before the first byte is sent
    dead = {"id": "dead", "base_url": f"http://127.0.0.1:{closed_port()}/v1", "api_key": TEST_KEY, "models": ["gone"]}
    assert (await api("POST", "api-models", dead))[0] == 201
    await api("POST", "router-aliases", {"alias": "rs", "targets": ["gone", "p2/echo-2"]})
    code, raw, headers = await api("POST", "chat/completions", {**chat, "model": "rs", "stream": True})
    assert code == 200 and headers["x-bodhi-target"] == "p2/echo-2"
    assert headers["Content-Type"].startswith("text/event-stream") and '"echo: "' in raw and raw.endswith("[DONE]\n\n")
    code, data, _ = await api("GET", "router-aliases/rs")
    assert data["state"][0] == {"target": "gone", "state": "cooling", "served_by": "api:dead",
                                "cooling_until": data["state"][0]["cooling_until"]} and data["state"][0]["cooling_until"]
