"""Routing table: exact vs prefix vs forward-all vs local, ties, unknown names."""

from __future__ import annotations

import pytest

from bodhi_nb.objs import Alias, ApiModelAlias, ModelNotFound
from bodhi_nb.server_core.model_router import Local, ModelRouter, Remote
from bodhi_nb.services.local_models import LocalModels


def api(id, models, prefix=None, fwd=False):
    return ApiModelAlias(id=id, base_url=f"http://127.0.0.1:9/{id}", models=models, prefix=prefix,
                         forward_all_with_prefix=fwd)


@pytest.fixture
def hub(tmp_path):
    d = tmp_path / "hub"
    snap = d / "models--acme--tiny-GGUF" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "tiny.Q4_K_M.gguf").write_bytes(b"GGUF")
    return d


@pytest.fixture
def router(db, bodhi_home, hub):
    data = LocalModels(bodhi_home, hub_dir=hub)
    return ModelRouter(db, data)


def test_exact_api_model(router, db):
    db.create(api("openai", ["gpt-4o"]), None)
    d = router.resolve("gpt-4o")
    assert isinstance(d, Remote) and d.api_alias.id == "openai" and d.upstream_model == "gpt-4o"


def test_prefix_is_stripped(router, db):
    db.create(api("or", ["meta/llama"], prefix="or/"), None)
    d = router.resolve("or/meta/llama")
    assert isinstance(d, Remote) and d.upstream_model == "meta/llama"
    with pytest.raises(ModelNotFound):
        router.resolve("meta/llama")


def test_forward_all_with_prefix(router, db):
    db.create(api("groq", [], prefix="groq/", fwd=True), None)
    d = router.resolve("groq/anything-new")
    assert isinstance(d, Remote) and d.upstream_model == "anything-new"


def test_listed_beats_forward_all(router, db):
    db.create(api("fwd", [], prefix="x/", fwd=True), None)
    db.create(api("listed", ["m"], prefix="x-"), None)
    db.create(api("listed2", ["x/m"]), None)
    assert router.resolve("x/m").api_alias.id == "listed2"
    assert router.resolve("x/other").api_alias.id == "fwd"


def test_most_recently_updated_wins_a_tie(router, db):
    db.create(api("a", ["same"]), None)
    db.create(api("b", ["same"]), None)
    assert router.resolve("same").api_alias.id == "b"
    db.update("a", {"models": ["same", "more"]})
    assert router.resolve("same").api_alias.id == "a"
    cands = router.explain("same")
    assert [(c.name, c.won) for c in cands] == [("a", True), ("b", False)]
    assert "updated more recently" in cands[1].reason


def test_api_before_user_alias_before_discovered(router, db, bodhi_home):
    data = router.data
    data.create_user_alias(Alias(alias="acme/tiny-GGUF:Q4_K_M", repo="acme/tiny-GGUF", filename="tiny.Q4_K_M.gguf"))
    d = router.resolve("acme/tiny-GGUF:Q4_K_M")
    assert isinstance(d, Local) and d.alias.source == "user"
    data.delete_user_alias("acme/tiny-GGUF:Q4_K_M")
    d = router.resolve("acme/tiny-GGUF:Q4_K_M")
    assert isinstance(d, Local) and d.alias.source == "model"
    db.create(api("shadow", ["acme/tiny-GGUF:Q4_K_M"]), None)
    assert isinstance(router.resolve("acme/tiny-GGUF:Q4_K_M"), Remote)
    exp = router.explain("acme/tiny-GGUF:Q4_K_M")
    assert [(c.source, c.won) for c in exp] == [("api", True), ("model", False)]


def test_unknown_model(router):
    with pytest.raises(ModelNotFound) as ei:
        router.resolve("nope")
    assert ei.value.status == 404 and ei.value.code == "model_not_found"
    assert router.explain("nope") == []


def test_list_models_no_duplicates_in_routing_order(router, db):
    db.create(api("a", ["m1", "m2"]), None)
    db.create(api("b", ["m2", "m3"], prefix="b/"), None)
    db.create(api("c", ["m1"]), None)
    ids = [e.id for e in router.list_models()]
    assert len(ids) == len(set(ids))
    assert set(ids) >= {"m1", "m2", "b/m2", "b/m3", "acme/tiny-GGUF:Q4_K_M"}
    for name in ids:
        router.resolve(name)  # every listed name resolves


def test_explain_winner_is_always_what_resolve_picks(router, db):
    """resolve() short-circuits on the hot path and explain() lists everything: they must agree."""
    db.create(api("a", ["m1", "shared"]), None)
    db.create(api("b", ["shared"], prefix="b/"), None)
    db.create(api("c", ["shared", "b/x"]), None)
    db.create(api("fwd", [], prefix="f/", fwd=True), None)
    router.data.create_user_alias(Alias(alias="m1", repo="acme/tiny-GGUF", filename="tiny.Q4_K_M.gguf"))
    router.data.create_user_alias(Alias(alias="mine", repo="acme/tiny-GGUF", filename="tiny.Q4_K_M.gguf"))
    names = ["m1", "shared", "b/shared", "b/x", "f/anything", "mine", "acme/tiny-GGUF:Q4_K_M"]
    for name in names:
        dest = router.resolve(name)
        first = router.explain(name)[0]
        assert first.won and sum(c.won for c in router.explain(name)) == 1
        got = (dest.api_alias.id if isinstance(dest, Remote) else dest.alias.alias)
        assert (first.name, first.source) == (got, "api" if isinstance(dest, Remote) else dest.alias.source), name
        if isinstance(dest, Remote):
            assert first.upstream_model == dest.upstream_model
