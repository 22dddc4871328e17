"""schemathesis against the served openapi.json: no 500s, and every response conforms.

Status codes, content types and response bodies are checked against the document on
every route, so the OpenAPI document cannot drift from what the server does; a
non-streamed chat through a loopback upstream is checked against the same schemas.
"""

from __future__ import annotations

import os

import jsonschema

from tests.conftest import TEST_KEY
from tests.resources.schemathesis_run import run_schemathesis

MAX_EXAMPLES = int(os.environ.get("BODHI_NB_FUZZ_EXAMPLES", "15"))


async def test_every_response_conforms_to_the_document(jp_serverapp, http_server_client, jp_http_port, jp_base_url,
                                                       tmp_path):
    code, out = await run_schemathesis(jp_serverapp, jp_http_port, jp_base_url, tmp_path, MAX_EXAMPLES)
    assert code == 0, out[-6000:]
    assert "Fuzzing" in out and "passed" in out  # it really ran the phases
    assert "/chat/completions" in out  # chat is fuzzed too


def _response_schema(doc: dict, path: str, method: str, status: str) -> dict:
    content = doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
    return {**content, "components": doc["components"]}


async def test_a_real_chat_completion_matches_its_documented_schema(api, upstream):
    code, _, _ = await api("POST", "api-models", {"id": "fake", "base_url": upstream.base_url, "api_key": TEST_KEY,
                                                  "models": ["echo", "status-429"], "prefix": "fake/"})
    assert code == 201
    _, doc, _ = await api("GET", "openapi.json")
    code, body, headers = await api("POST", "chat/completions",
                                    {"model": "fake/echo", "messages": [{"role": "user", "content": "hi"}]})
    assert code == 200 and headers["Content-Type"].startswith("application/json")
    jsonschema.validate(body, _response_schema(doc, "/chat/completions", "post", "200"))
    code, body, _ = await api("POST", "chat/completions",
                              {"model": "fake/status-429", "messages": [{"role": "user", "content": "hi"}]})
    assert code == 429 and "429" in doc["paths"]["/chat/completions"]["post"]["responses"]
    jsonschema.validate(body, _response_schema(doc, "/chat/completions", "post", "429"))
    # the schema really constrains: a body without choices does not pass
    try:
        jsonschema.validate({"id": "x"}, _response_schema(doc, "/chat/completions", "post", "200"))
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("the documented chat response accepts a body without choices")
