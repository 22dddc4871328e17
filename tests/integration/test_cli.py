"""The bodhi-nb command, run as a user would (a real process)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import TEST_KEY
from tests.resources.cli import cli


def test_api_models_lifecycle_with_key_from_env(bodhi_home, upstream):
    r = cli(bodhi_home, "api-models", "create", "fake", upstream.base_url, "--models", "echo", "--prefix", "f/",
            env={"BODHI_API_KEY": TEST_KEY})
    assert r.returncode == 0, r.stderr
    created = json.loads(r.stdout)
    assert created["has_api_key"] and TEST_KEY not in r.stdout + r.stderr
    r = cli(bodhi_home, "api-models", "list")
    assert [m["id"] for m in json.loads(r.stdout)] == ["fake"] and TEST_KEY not in r.stdout
    r = cli(bodhi_home, "api-models", "test", "fake", "echo", "--prompt", "cli")
    assert r.returncode == 0 and json.loads(r.stdout)["response"] == "echo: cli"
    r = cli(bodhi_home, "api-models", "fetch-models", "fake")
    assert json.loads(r.stdout)[0] == "echo"
    r = cli(bodhi_home, "api-models", "update", "fake", "--models", "echo", "echo-2")
    assert json.loads(r.stdout)["models"] == ["echo", "echo-2"] and json.loads(r.stdout)["has_api_key"]
    r = cli(bodhi_home, "route", "f/echo-2")
    assert r.returncode == 0 and r.stdout.startswith("-> api:fake [prefix]")
    r = cli(bodhi_home, "rotate-key")
    assert r.returncode == 0 and "Re-encrypted" in r.stdout
    r = cli(bodhi_home, "api-models", "test", "fake", "echo")
    assert r.returncode == 0 and json.loads(r.stdout)["success"]  # the key survived rotation
    r = cli(bodhi_home, "api-models", "delete", "fake")
    assert r.returncode == 0


def test_errors_exit_non_zero_with_one_line(bodhi_home):
    r = cli(bodhi_home, "api-models", "delete", "missing")
    assert r.returncode == 1 and r.stderr.strip() == "error (404 not_found): API model 'missing' not found."
    r = cli(bodhi_home, "route", "nothing-serves-this")
    assert r.returncode == 1
    r = cli(bodhi_home, "api-models", "create", "bad id", "http://x", "--no-key")
    assert r.returncode == 1 and "id must start" in r.stderr
    r = cli(bodhi_home, "bogus")
    assert r.returncode == 2


def test_alias_params_with_bad_json_are_one_line_errors_and_create_nothing(bodhi_home):
    base = ("aliases", "create", "my-alias", "org/repo-GGUF", "model.Q4_K_M.gguf")
    r = cli(bodhi_home, *base, "--request-params", "{temperature: 0.2}")
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith("error (400 invalid_request): --request-params is not valid JSON"), r.stderr
    r = cli(bodhi_home, *base, "--request-params", "{}", "--context-params", '{"n_ctx": 2048')
    assert r.returncode == 1 and r.stderr.startswith("error (400 invalid_request): --context-params is not valid JSON")
    r = cli(bodhi_home, *base, "--context-params", "[2048]")
    assert r.returncode == 1 and r.stderr.strip() == ('error (400 invalid_request): --context-params must be a JSON '
                                                      'object, e.g. {"temperature": 0.2}.')
    r = cli(bodhi_home, "aliases", "list")
    assert r.returncode == 0 and json.loads(r.stdout)["user"] == []


def test_key_is_never_taken_from_argv():
    from bodhi_nb.cli import build_parser

    helps = build_parser().format_help()
    assert "--api-key " not in helps
    sub = subprocess.run([sys.executable, "-m", "bodhi_nb.cli", "api-models", "create", "--help"],
                         capture_output=True, text=True)
    assert "--api-key-env" in sub.stdout and "--api-key " not in sub.stdout
