"""RouterAlias rules: names, targets, attempts, cooldowns, and the all-cooling error."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bodhi_nb.objs import UpstreamError
from bodhi_nb.objs.errors import TargetsCoolingDown, validation_message
from bodhi_nb.objs.router_alias import MAX_COOLDOWN_SECONDS, RouterAlias, RouterAliasSpec
from bodhi_nb.services.retry import retryable


def test_defaults_follow_the_targets():
    r = RouterAlias(alias="chat-fallback", targets=["openai/gpt-4o-mini", "groq/llama", "smollm2:135m"])
    assert r.cooldown_seconds == 60 and r.honor_retry_after and r.max_attempts is None and r.attempts == 3
    assert r.model_copy(update={"max_attempts": 1}).attempts == 1
    dumped = r.model_dump(mode="json")
    assert dumped["created_at"].endswith("Z") and RouterAlias.model_validate(dumped) == r


@pytest.mark.parametrize(("fields", "where", "words"), [
    ({"targets": []}, "targets", "at least 1"),
    ({"targets": ["a", "a"]}, "targets", "listed twice"),
    ({"targets": ["a", " b"]}, "targets", "whitespace"),
    ({"targets": ["a\nb"]}, "targets", "printable"),
    ({"targets": ["x" * 300]}, "targets", "at most 256"),
    ({"targets": ["r"]}, None, "itself"),
    ({"targets": ["a"], "max_attempts": 2}, None, "at most the number of targets"),
    ({"targets": ["a"], "max_attempts": 0}, "max_attempts", "greater than or equal to 1"),
    ({"targets": ["a"], "cooldown_seconds": -1}, "cooldown_seconds", "greater than or equal to 0"),
    ({"targets": ["a"], "alias": "has space"}, "alias", "letters, digits"),
    ({"targets": ["a"], "alias": "-leading"}, "alias", "start with a letter"),
    ({"targets": ["a"], "extra": 1}, "extra", "not permitted"),
])
def test_bad_specs_name_the_field(fields, where, words):
    with pytest.raises(ValidationError) as ei:
        RouterAliasSpec(**{"alias": "r", **fields})
    msg, param = validation_message(ei.value)
    assert param == where and words in msg


def test_same_name_rules_as_user_aliases():
    for ok in ("fast", "team/chat:latest", "a.b_c-d", "x" * 128):
        assert RouterAliasSpec(alias=ok, targets=["t"]).alias == ok
    with pytest.raises(ValidationError):
        RouterAliasSpec(alias="x" * 129, targets=["t"])


def test_cooldown_honours_the_hint_only_when_asked():
    r = RouterAliasSpec(alias="r", targets=["a"], cooldown_seconds=30)
    assert r.cooldown_for(None) == 30 and r.cooldown_for(7) == 7 and r.cooldown_for(-3) == 0
    assert r.cooldown_for(10 * MAX_COOLDOWN_SECONDS) == MAX_COOLDOWN_SECONDS  # a wild hint is capped
    off = r.model_copy(update={"honor_retry_after": False})
    assert off.cooldown_for(7) == 30


def test_all_cooling_is_a_retryable_429_with_retry_after():
    e = TargetsCoolingDown("r", 12, "a: 429, b: 503")
    assert isinstance(e, UpstreamError) and retryable(e)
    assert e.status == 429 and e.headers == {"Retry-After": "12"} and e.retry_after == 12
    env = e.to_envelope()["error"]
    assert env["code"] == "router_targets_cooling_down" and env["param"] == "model"
    assert "'r'" in env["message"] and "a: 429, b: 503" in env["message"] and "12 s" in env["message"]
