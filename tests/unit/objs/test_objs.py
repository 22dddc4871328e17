from __future__ import annotations

import json
import re

import pytest
from pydantic import ValidationError

from bodhi_nb.objs import (
    Alias,
    AliasSource,
    ApiModelAlias,
    ConflictError,
    ModelNotFound,
    RequestParams,
    mask_api_key,
    normalize_base_url,
)
from bodhi_nb.objs.errors import validation_message
from bodhi_nb.objs.model_alias import DiscoveredModelAlias, UserModelAlias


def api(**kw) -> ApiModelAlias:
    base = dict(id="openai", base_url="https://api.example.com/v1/", models=["gpt-4o", "gpt-4o-mini"])
    base.update(kw)
    return ApiModelAlias(**base)


def test_alias_source_serialises_as_plain_strings():
    assert [str(s) for s in AliasSource] == ["user", "model", "api"]
    assert json.dumps(AliasSource.API) == '"api"'


def test_base_url_trailing_slash_is_dropped_and_bad_urls_rejected():
    assert api().base_url == "https://api.example.com/v1"
    for bad in ["ftp://x", "not a url", "http://", "https://h/v1?x=1"]:
        with pytest.raises(ValidationError, match="base_url"):
            api(base_url=bad)


BAD_BASE_URLS = {
    "CR/LF": ("http://h/v1\r\nX-Injected: 1", "line breaks"),
    "LF only": ("http://h/v1\n", "line breaks"),
    "NUL": ("http://h\x00.example/v1", "NUL"),
    "space": ("http://h/v 1", "spaces"),
    "surrounding space": (" http://h/v1", "spaces"),
    "port 70000": ("http://h:70000/v1", "port"),
    "port 0": ("http://h:0/v1", "port"),
    "port not a number": ("http://h:abc/v1", "port"),
    "70 KB URL": ("http://h/" + "a" * 70_000, "2,048"),
    "ftp": ("ftp://h/v1", "http:// or https://"),
    "no host": ("http:///v1", "with a host"),
    "port but no host": ("http://:8080/v1", "with a host"),
    "user:password@": ("https://user:password@h/v1", "api_key field"),
    "user@": ("https://user@h/v1", "api_key field"),
    "bad IPv6": ("http://[::1/v1", "not a valid URL"),
    "query": ("https://h/v1?x=1", "query"),
    "empty fragment": ("https://h/v1#", "fragment"),
}


@pytest.mark.parametrize("name", list(BAD_BASE_URLS))
def test_bad_base_urls_are_refused_with_a_clear_message(name):
    url, words = BAD_BASE_URLS[name]
    with pytest.raises(ValueError, match=re.escape(words)):
        normalize_base_url(url)
    with pytest.raises(ValidationError, match="base_url") as ei:
        api(base_url=url)
    msg, param = validation_message(ei.value)  # what every surface shows: names the field, never the URL
    assert param == "base_url" and words in msg and url not in msg and "user:password" not in msg


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/v1", "https://h:65535/v1/", "http://[::1]:8080/v1",
                                 "https://api.example.com", "http://h/" + "a" * (2048 - 9)])
def test_good_base_urls_are_kept_without_trailing_slash(url):
    assert normalize_base_url(url) == url.rstrip("/")


def test_a_base_url_that_is_not_text_is_a_value_error():
    with pytest.raises(ValueError, match="string"):
        normalize_base_url(123)  # type: ignore[arg-type]


@pytest.mark.parametrize("field,value,words", [
    ("models", ["a\x00b"], "printable"), ("models", ["a\nb"], "printable"), ("models", ["m" * 257], "256"),
    ("prefix", "p\x00/", "control characters"), ("prefix", "p\n/", "whitespace")])
def test_model_names_and_prefix_refuse_control_characters(field, value, words):
    with pytest.raises(ValidationError, match=words):
        api(**{field: value})
    # a record stored under the older, looser rules still loads
    from bodhi_nb.objs.api_model_alias import STORED

    data = {"id": "old", "base_url": "http://h/v1", "models": ["m"], field: value}
    if field == "prefix" and "\n" in value:
        return  # whitespace in a prefix was always refused
    assert getattr(ApiModelAlias.model_validate(data, context=STORED), field) == value


@pytest.mark.parametrize("bad", ["", "-x", "a b", "a/b", "x" * 101, "x\n", "x\x00"])
def test_id_pattern(bad):
    with pytest.raises(ValidationError, match="id must start"):
        api(id=bad)


def test_models_may_be_empty_only_with_forward_all():
    with pytest.raises(ValidationError, match="models must not be empty"):
        api(models=[])
    with pytest.raises(ValidationError, match="needs a prefix"):
        api(models=[], forward_all_with_prefix=True)
    a = api(models=[], prefix="or/", forward_all_with_prefix=True)
    assert a.upstream_model_for("or/anything") is not None and not a.upstream_model_for("anything") is not None and not a.upstream_model_for("or/") is not None


def test_models_are_deduplicated_in_order():
    assert api(models=["b", "a", "b"]).models == ["b", "a"]


def test_can_serve_exact_prefixed_and_forward_all():
    plain = api()
    assert plain.upstream_model_for("gpt-4o") is not None and not plain.upstream_model_for("gpt-3") is not None
    pre = api(prefix="openai/")
    assert pre.upstream_model_for("openai/gpt-4o") is not None and not pre.upstream_model_for("gpt-4o") is not None
    assert pre.upstream_model_for("openai/gpt-4o") == "gpt-4o"
    assert pre.served_names() == ["openai/gpt-4o", "openai/gpt-4o-mini"]
    fwd = api(prefix="openai/", forward_all_with_prefix=True)
    assert fwd.upstream_model_for("openai/o3") == "o3"


def test_timestamps_are_rfc3339_utc():
    data = api().model_dump(mode="json")
    assert data["created_at"].endswith("Z") and "T" in data["created_at"]
    assert ApiModelAlias.model_validate(data).created_at == api(created_at=data["created_at"]).created_at


@pytest.mark.parametrize(
    "cls,variant",
    [
        (UserModelAlias, {"source": "user", "alias": "tiny:chat", "repo": "o/r", "filename": "m.Q4_0.gguf",
                          "snapshot": "main", "request_params": {"temperature": 0.2}, "context_params": {"n_ctx": 512}}),
        (DiscoveredModelAlias, {"source": "model", "alias": "o/r:Q4_0", "repo": "o/r", "filename": "m.Q4_0.gguf",
                                "snapshot": "abc"}),
    ],
)
def test_local_model_alias_json_round_trip(cls, variant):
    ma = cls.model_validate(variant)
    again = cls.model_validate_json(ma.model_dump_json())
    assert again == ma and json.loads(ma.model_dump_json())["source"] == variant["source"]


def test_a_variant_refuses_another_source():
    with pytest.raises(ValidationError):
        DiscoveredModelAlias.model_validate({"source": "cloud", "alias": "x", "repo": "o/r", "filename": "f.gguf"})


def test_alias_validation_names_the_field():
    with pytest.raises(ValidationError, match="filename"):
        Alias(alias="a", repo="o/r", filename="model.bin")
    with pytest.raises(ValidationError, match="alias"):
        Alias(alias=" bad", repo="o/r", filename="m.gguf")
    with pytest.raises(ValidationError, match="temperature"):
        Alias(alias="a", repo="o/r", filename="m.gguf", request_params={"temperature": 9})


def test_request_params_apply_only_where_unset():
    rp = RequestParams(temperature=0.1, max_tokens=7)
    assert rp.defaults_for({"temperature": 0.9}) == {"max_tokens": 7}
    assert rp.defaults_for({"temperature": None}) == {"temperature": 0.1, "max_tokens": 7}


@pytest.mark.parametrize(
    "key,masked",
    [("", "***"), ("short", "***"), ("x" * 12, "***"), ("sk-abcdefghijkl", "sk-...ijkl"),
     ("sk-proj-1234567890ABCD", "sk-...ABCD")],
)
def test_mask_api_key(key, masked):
    assert mask_api_key(key) == masked


def test_errors_carry_their_envelope():
    e = ModelNotFound("nope")
    env = e.to_envelope()["error"]
    assert (e.status, env["type"], env["code"], env["param"]) == (404, "invalid_request_error", "model_not_found", "model")
    assert "nope" in env["message"]
    c = ConflictError("taken", param="id")
    assert c.status == 409 and c.to_envelope()["error"]["param"] == "id"


def test_objs_import_no_io_libraries():
    import subprocess
    import sys

    code = (
        "import sys, bodhi_nb.objs; "
        "bad=[m for m in ('httpx','tinydb','tornado','filelock') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("bad", ["", "a b", "k\x00", "k\r\nX: 1", "k\t", "k" * 4097])
def test_api_key_rule(bad):
    from bodhi_nb.objs.api_model_alias import check_api_key

    with pytest.raises(ValueError, match="api_key must be") as ei:
        check_api_key(bad)
    assert bad not in str(ei.value) or not bad
    check_api_key("sk-" + "x" * 4093)
