"""Shared fixtures: an isolated BODHI_HOME per test and a fast KDF for unit tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Never touch a developer's real keyring or home from the tests.
os.environ["BODHI_NO_KEYRING"] = "1"
os.environ.pop("BODHI_ENCRYPTION_KEY", None)
# Nothing in the tests may reach the real Hugging Face Hub: a pull without a test's own fake
# hub (tests/resources/fake_hub.py) meets a closed loopback port.
os.environ.setdefault("HF_ENDPOINT", "http://127.0.0.1:9")

TEST_KEY = "sk-bodhitest-SECRET-9f8e7d6c5b4a3210-ZZ"
"""A recognisable fake API key: leak tests grep for it (and for its distinctive middle)."""
TEST_SECRET = "test-master-secret-0123456789"
FAST_KDF = 1_000  # explicit test-only iteration count (production: 600,000)

REQUIRE_OPTIONAL_ENV = "BODHI_NB_REQUIRE_OPTIONAL"


def optional_dependency(available: bool, reason: str) -> pytest.MarkDecorator:
    """Skip a test whose optional dependency is missing, except under BODHI_NB_REQUIRE_OPTIONAL=1
    (CI sets it), where the absence fails the test: a skip must never hide a missing feature there."""
    return pytest.mark.optional_dependency(available=available, reason=reason)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "optional_dependency(available, reason): see tests/conftest.py")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("optional_dependency"):
        if mark.kwargs["available"]:
            continue
        reason = mark.kwargs["reason"]
        if os.environ.get(REQUIRE_OPTIONAL_ENV) == "1":
            pytest.fail(f"{reason}, and {REQUIRE_OPTIONAL_ENV}=1 requires it", pytrace=False)
        pytest.skip(reason)


@pytest.fixture
def bodhi_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "bodhi_home"
    home.mkdir()
    monkeypatch.setenv("BODHI_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return home


@pytest.fixture
def db(bodhi_home: Path):
    from bodhi_nb.services.db import ConfigStore

    svc = ConfigStore(bodhi_home, TEST_SECRET, kdf_iterations=FAST_KDF)
    yield svc
    svc.close()


class FakeUpstream:
    """A running fake provider process (fake_openai.py unless `script` names another):
    `base_url` (`http://127.0.0.1:<port><path>`), `key`, and `last()` request."""

    def __init__(self, key: str | None, script: str = "fake_openai.py", path: str = "/v1") -> None:
        from tests.resources.servers import start_fake

        self.key = key
        self.proc, self.port = start_fake(script, *(["--key", key] if key else []))
        self.base_url = f"http://127.0.0.1:{self.port}{path}"

    def last(self) -> dict:
        import httpx

        return httpx.get(f"http://127.0.0.1:{self.port}/_last", trust_env=False).json()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="session")
def upstream():
    """A real OpenAI-compatible server on 127.0.0.1 that requires TEST_KEY."""
    up = FakeUpstream(TEST_KEY)
    yield up
    up.stop()


@pytest.fixture(scope="session")
def anthropic_upstream():
    """A real Anthropic Messages server on 127.0.0.1 (tests/resources/fake_anthropic.py), key TEST_KEY."""
    up = FakeUpstream(TEST_KEY, "fake_anthropic.py")
    yield up
    up.stop()


@pytest.fixture(scope="session")
def responses_upstream():
    """A real OpenAI Responses server on 127.0.0.1 (tests/resources/fake_responses.py), key TEST_KEY."""
    up = FakeUpstream(TEST_KEY, "fake_responses.py")
    yield up
    up.stop()


@pytest.fixture(scope="session")
def gemini_upstream():
    """A real Gemini generateContent server on 127.0.0.1 (tests/resources/fake_gemini.py), key TEST_KEY."""
    up = FakeUpstream(TEST_KEY, "fake_gemini.py", "/v1beta")
    yield up
    up.stop()
