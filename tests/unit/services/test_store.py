from __future__ import annotations

import json
import os
import stat

import pytest
from pydantic import ValidationError

from bodhi_nb.objs import (
    ApiModelAlias,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    StoreError,
    WrongMasterKeyError,
)
from bodhi_nb.services.db import (
    ConfigStore,
    LockedJSONStorage,
    load_master_secret,
    migrations,
)
from tests.conftest import FAST_KDF, TEST_KEY, TEST_SECRET


def make(id="openai", **kw) -> ApiModelAlias:
    base = {"id": id, "base_url": "http://127.0.0.1:9/v1", "models": ["gpt-4o"]}
    base.update(kw)
    return ApiModelAlias(**base)


# -- migrations -------------------------------------------------------------------------


def test_migrations_up_down_up(bodhi_home):
    st = LockedJSONStorage(bodhi_home / "m.json")
    assert migrations.migrate(st) == migrations.LATEST == 6
    data = st.snapshot()
    assert data["_meta"]["1"]["key_generation"] == 0
    assert "api_model_aliases" in data
    assert "unique_indexes" not in data["_meta"]["1"]  # the maps live in memory, not in the file
    salt = data["_meta"]["1"]["kdf_salt"]
    assert migrations.migrate(st, 4) == 4
    assert "key_generation" not in st.snapshot()["_meta"]["1"]
    assert migrations.migrate(st, 3) == 3
    assert "api_model_aliases" not in st.snapshot()
    assert migrations.migrate(st, 0) == 0
    assert "_meta" not in st.snapshot()
    assert migrations.migrate(st) == 6
    assert st.snapshot()["_meta"]["1"]["kdf_salt"] != salt  # a fresh store gets a fresh salt
    with pytest.raises(StoreError, match="No schema level"):
        migrations.migrate(st, 9)


def test_newer_schema_is_refused(bodhi_home):
    st = LockedJSONStorage(bodhi_home / "m.json")
    st.write({"_meta": {"1": {"schema_version": 99}}})
    with pytest.raises(StoreError, match="newer than this bodhi_nb"):
        migrations.migrate(st)


# -- CRUD ---------------------------------------------------------------------------------


def test_create_get_list_masks_key(db):
    rec = db.create(make(), TEST_KEY)
    assert rec.has_api_key and rec.api_key_masked == TEST_KEY[:3] + "..." + TEST_KEY[-4:]
    assert db.get("openai").models == ["gpt-4o"]
    assert db.get_api_key("openai") == TEST_KEY
    items, total = db.list()
    assert total == 1 and items[0].alias.id == "openai"
    assert TEST_KEY not in repr(rec)  # the record shows only the masked form
    assert TEST_KEY not in repr(items)


def test_without_key(db):
    rec = db.create(make("local-openai"), None)
    assert not rec.has_api_key and rec.api_key_masked is None and db.get_api_key("local-openai") is None


def test_duplicate_id_and_prefix_conflict(db):
    db.create(make("a", prefix="p/"), TEST_KEY)
    with pytest.raises(ConflictError, match="already exists"):
        db.create(make("a"), TEST_KEY)
    with pytest.raises(ConflictError, match="prefix 'p/'"):
        db.create(make("b", prefix="p/"), TEST_KEY)
    db.create(make("c", prefix="q/"), TEST_KEY)
    with pytest.raises(ConflictError):
        db.update("c", {"prefix": "p/"})
    db.update("a", {"prefix": "p/", "models": ["x"]})  # own prefix is fine


def test_list_newest_first_and_paginated(db):
    for i in range(5):
        db.create(make(f"m{i}"), None)
    page1, total = db.list(page=1, page_size=2)
    page3, _ = db.list(page=3, page_size=2)
    assert total == 5
    assert [r.alias.id for r in page1] == ["m4", "m3"]
    assert [r.alias.id for r in page3] == ["m0"]
    with pytest.raises(InvalidRequestError):
        db.list(page=0)


def test_update_without_key_keeps_it_and_new_key_gets_new_ciphertext(db):
    db.create(make(), TEST_KEY)
    before = json.loads(db.path.read_text())["api_model_aliases"]["openai"]["api_key"]
    rec = db.update("openai", {"models": ["gpt-4o", "o3"]})
    assert rec.alias.models == ["gpt-4o", "o3"] and db.get_api_key("openai") == TEST_KEY
    assert rec.alias.updated_at > rec.alias.created_at
    same = json.loads(db.path.read_text())["api_model_aliases"]["openai"]["api_key"]
    assert same == before
    db.update("openai", {}, api_key="sk-new-key-0000000000000")
    after = json.loads(db.path.read_text())["api_model_aliases"]["openai"]["api_key"]
    assert after != before and after[3:47] != before[3:47]
    assert db.get_api_key("openai") == "sk-new-key-0000000000000"


def test_update_validates_the_merged_object(db):
    db.create(make(), TEST_KEY)
    with pytest.raises(ValidationError, match="models must not be empty"):
        db.update("openai", {"models": []})
    assert db.get("openai").models == ["gpt-4o"]


def test_delete_and_not_found(db):
    db.create(make(), TEST_KEY)
    db.delete("openai")
    for call in (lambda: db.get("openai"), lambda: db.delete("openai"), lambda: db.update("openai", {}),
                 lambda: db.get_api_key("openai")):
        with pytest.raises(NotFoundError):
            call()


def test_bad_key_value_is_refused_without_echo(db):
    with pytest.raises(InvalidRequestError) as ei:
        db.create(make(), "has space-" + "x" * 20)
    assert "x" * 20 not in str(ei.value)


def test_lookups_by_served_name_newest_updated_first(db):
    db.create(make("old", models=["shared"]), None)
    db.create(make("new", models=["shared"]), None)
    assert [a.id for a in db.find_by_served_name("shared")] == ["new", "old"]
    db.update("old", {"base_url": "http://127.0.0.1:8/v1"})
    assert [a.id for a in db.find_by_served_name("shared")] == ["old", "new"]
    db.create(make("fwd", models=[], prefix="f/", forward_all_with_prefix=True), None)
    assert [a.id for a in db.forward_all_aliases()] == ["fwd"]


def test_second_instance_sees_writes_of_the_first(db, bodhi_home):
    other = ConfigStore(bodhi_home, TEST_SECRET, kdf_iterations=FAST_KDF)
    db.create(make("seen"), TEST_KEY)
    assert other.get("seen").id == "seen"
    assert other.get_api_key("seen") == TEST_KEY
    with pytest.raises(ConflictError):
        other.create(make("seen"), None)


# -- secrets --------------------------------------------------------------------------------


def test_db_file_never_contains_plaintext_key(db):
    db.create(make(), TEST_KEY)
    db.update("openai", {"models": ["a"]}, api_key=TEST_KEY)
    raw = db.path.read_bytes()
    assert TEST_KEY.encode() not in raw
    assert b"SECRET-9f8e7d6c5b4a3210" not in raw


def test_wrong_master_secret_fails_at_open(db, bodhi_home):
    db.create(make(), TEST_KEY)
    with pytest.raises(WrongMasterKeyError, match="does not open"):
        ConfigStore(bodhi_home, "a-completely-different-secret", kdf_iterations=FAST_KDF)


def test_rotation_keeps_every_key_readable_with_the_new_secret_only(db, bodhi_home):
    for i in range(3):
        db.create(make(f"m{i}"), f"{TEST_KEY}-{i}")
    db.create(make("nokey"), None)
    db.rotate_master_key("the-new-master-secret-abcdef")
    assert [db.get_api_key(f"m{i}") for i in range(3)] == [f"{TEST_KEY}-{i}" for i in range(3)]
    fresh = ConfigStore(bodhi_home, "the-new-master-secret-abcdef", kdf_iterations=FAST_KDF)
    assert fresh.get_api_key("m2") == f"{TEST_KEY}-2" and fresh.get_api_key("nokey") is None
    with pytest.raises(WrongMasterKeyError):
        ConfigStore(bodhi_home, TEST_SECRET, kdf_iterations=FAST_KDF)


def _tamper(db, id, how="copy"):
    data = json.loads(db.path.read_text())
    docs = data["api_model_aliases"]
    if how == "copy":  # a ciphertext pasted from another record
        docs[id]["api_key"] = next(d["api_key"] for k, d in docs.items() if k != id and d["api_key"])
    else:  # bytes flipped in the ciphertext
        token = docs[id]["api_key"]
        docs[id]["api_key"] = token[:-8] + ("A" if token[-8] != "A" else "B") + token[-7:]
    LockedJSONStorage(db.path).write(data)


@pytest.mark.parametrize("how", ["copy", "flip"])
def test_tampered_record_is_isolated_and_repairable(db, how):
    from bodhi_nb.objs import DecryptionError

    db.create(make("a"), TEST_KEY)
    db.create(make("b"), "sk-other-key-1234567890")
    db.create(make("c"), None)
    _tamper(db, "b", how)
    with pytest.raises(DecryptionError, match="API model 'b'") as ei:
        db.get_api_key("b")
    assert "delete it" in ei.value.message and "\n" not in ei.value.message
    assert db.get_api_key("a") == TEST_KEY
    items, total = db.list()
    by_id = {r.alias.id: r for r in items}
    assert total == 3 and set(by_id) == {"a", "b", "c"}
    assert by_id["b"].api_key_masked is None and by_id["b"].has_api_key and "cannot be decrypted" in by_id["b"].error
    assert by_id["a"].error is None and by_id["a"].api_key_masked == TEST_KEY[:3] + "..." + TEST_KEY[-4:]
    assert by_id["b"].public()["error"] == by_id["b"].error and by_id["a"].public()["error"] is None
    assert db.record("b").error == by_id["b"].error
    db.update("b", {"models": ["still-broken"]})  # no new key: still unreadable, still listed
    assert db.record("b").error is not None
    db.update("b", {}, api_key="sk-repaired-key-0123456789")  # a new key repairs it
    assert db.record("b").error is None and db.get_api_key("b") == "sk-repaired-key-0123456789"
    _tamper(db, "a", how)
    db.delete("a")  # delete repairs too
    assert [r.error for r in db.list()[0]] == [None, None]


def test_list_never_fails_while_another_process_deletes_and_creates(db, bodhi_home):
    """Before one-snapshot lists, a delete between building the page and reading a record gave a 404."""
    import threading
    import time

    for i in range(20):
        db.create(make(f"keep-{i}"), f"{TEST_KEY}-{i}")
    other = ConfigStore(bodhi_home, TEST_SECRET, kdf_iterations=FAST_KDF)  # its own index, like another process
    stop, started = threading.Event(), threading.Event()
    writes = [0]  # creates and deletes the churn has finished so far
    churned = []

    def churn():
        started.set()
        n = 0
        while not stop.is_set():
            for j in range(5):
                other.create(make(f"churn-{j}"), TEST_KEY)
                writes[0] += 1
            for j in range(5):
                other.delete(f"churn-{j}")
                writes[0] += 1
            n += 1
        churned.append(n)

    t = threading.Thread(target=churn)
    t.start()
    failures, seen, during = 0, set(), 0
    try:
        assert started.wait(timeout=20), "the churn thread did not start"
        deadline = time.monotonic() + 60
        lists = 0
        # At least 500 lists, and on until the churn has finished 20 writes meanwhile (a loaded
        # machine may take longer for one fsynced write than for 500 in-memory lists).
        while lists < 500 or (writes[0] < 20 and time.monotonic() < deadline):
            lists += 1
            before = writes[0]
            try:
                items, total = db.list(page_size=100)
                assert total == len(items)
                seen.add(total)
            except Exception:  # noqa: BLE001 - any failure of a list counts
                failures += 1
            during += writes[0] != before  # the churn finished a write while this list ran
    finally:
        stop.set()
        t.join()
    assert failures == 0
    assert churned[0] > 0 and seen <= set(range(20, 26))
    # The lists really raced the churn: some ran across a write, and they saw the store in more than one state.
    assert during > 0 and len(seen) > 1, (during, seen)


def test_base_url_to_another_origin_needs_the_key_again(db):
    db.create(make("k", base_url="https://api.example.com/v1"), TEST_KEY)
    db.create(make("nokey", base_url="https://api.example.com/v1"), None)
    for url in ("https://evil.example.net/v1", "http://api.example.com/v1", "https://api.example.com:8443/v1"):
        with pytest.raises(InvalidRequestError) as ei:
            db.update("k", {"base_url": url})
        assert ei.value.status == 400 and ei.value.code == "api_key_required" and ei.value.param == "api_key"
        assert db.get("k").base_url == "https://api.example.com/v1" and db.get_api_key("k") == TEST_KEY
    # the same origin (path, default port, host case) keeps the stored key
    db.update("k", {"base_url": "https://API.example.com:443/v2"})
    assert db.get_api_key("k") == TEST_KEY
    # with the key given again, moving is fine
    db.update("k", {"base_url": "https://evil.example.net/v1"}, api_key="sk-for-the-new-host-01234")
    assert db.get("k").base_url == "https://evil.example.net/v1"
    assert db.get_api_key("k") == "sk-for-the-new-host-01234"
    db.update("nokey", {"base_url": "http://127.0.0.1:8/v1"})  # no stored key, nothing to protect


def test_master_secret_sources(bodhi_home, monkeypatch):
    monkeypatch.setenv("BODHI_ENCRYPTION_KEY", "short")
    with pytest.raises(StoreError, match="at least 20"):
        load_master_secret(bodhi_home)
    monkeypatch.setenv("BODHI_ENCRYPTION_KEY", "x" * 24)
    s = load_master_secret(bodhi_home)
    assert s.origin == "env" and "x" * 24 not in repr(s)
    monkeypatch.delenv("BODHI_ENCRYPTION_KEY")
    f = load_master_secret(bodhi_home)
    path = bodhi_home / ".secret_key"
    assert f.origin == "file" and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_master_secret(bodhi_home).value == f.value  # stable across calls


def test_master_secret_from_a_real_keyring_backend(bodhi_home, memory_keyring):
    """No OS keyring runs here, so an in-memory backend stands in for the OS edge."""
    s = load_master_secret(bodhi_home)
    assert s.origin == "keyring" and len(s.value) >= 20
    assert memory_keyring.store[("bodhi_nb", str(bodhi_home.resolve()))] == s.value
    assert not (bodhi_home / ".secret_key").exists()
    assert load_master_secret(bodhi_home).value == s.value
    db = ConfigStore(bodhi_home, kdf_iterations=FAST_KDF)
    db.create(make(), TEST_KEY)
    res = db.rotate_master_key("rotated-secret-in-keyring-123")  # saves it in the keyring itself
    assert res.secret.origin == "keyring" and "OS keyring" in res.message()
    assert memory_keyring.store[("bodhi_nb", str(bodhi_home.resolve()))] == "rotated-secret-in-keyring-123"
    again = ConfigStore(bodhi_home, kdf_iterations=FAST_KDF)
    assert again.master_secret.origin == "keyring" and again.get_api_key("openai") == TEST_KEY
