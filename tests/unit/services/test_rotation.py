"""Master-key rotation under faults: every step made to fail, and real processes killed.

After every case the store must open with the secret that is persisted (the key file,
the keyring, or for an environment secret the one the user holds), and a stored key
must still authenticate against a loopback upstream that checks it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import textwrap

import pytest

from bodhi_nb.objs import ApiModelAlias, BodhiError, InvalidRequestError, StoreError
from bodhi_nb.objs.errors import MasterKeyRotatedError
from bodhi_nb.services.db import (
    ConfigStore,
    LockedJSONStorage,
    _rotation,
    load_master_secret,
    master_key,
)
from bodhi_nb.services.upstream_client import StoredCredentials, UpstreamClient
from tests.conftest import FAST_KDF, TEST_KEY, TEST_SECRET

OTHER_KEYS = {f"other-{i}": f"sk-other-{i:02d}-0123456789abcdef" for i in range(4)}


def _seed(db: ConfigStore, upstream) -> None:
    db.create(ApiModelAlias(id="up", base_url=upstream.base_url, models=["echo"]), TEST_KEY)
    for id, key in OTHER_KEYS.items():
        db.create(ApiModelAlias(id=id, base_url="http://127.0.0.1:9/v1", models=[id]), key)
    db.create(ApiModelAlias(id="nokey", base_url="http://127.0.0.1:9/v1", models=["n"]), None)


def _authenticates(db: ConfigStore) -> None:
    """The stored key of 'up' reaches the upstream, which accepts only TEST_KEY."""

    async def go():
        svc = UpstreamClient(db, connect_timeout=5.0)
        try:
            return await svc.test_prompt(StoredCredentials("up"), "echo", "hi"), await svc.fetch_models(
                StoredCredentials("up"))
        finally:
            await svc.aclose()

    res, models = asyncio.run(go())
    assert res.success and res.response == "echo: hi", res.error
    assert "echo" in models


def assert_intact(home, secret=None) -> ConfigStore:
    """Open with the persisted secret (or `secret`), check every key, and authenticate upstream."""
    db = ConfigStore(home, secret, kdf_iterations=FAST_KDF)
    assert db.get_api_key("up") == TEST_KEY
    assert {id: db.get_api_key(id) for id in OTHER_KEYS} == OTHER_KEYS
    assert db.get_api_key("nokey") is None
    items, total = db.list(page_size=100)
    assert total == 6 and all(r.error is None for r in items)
    _authenticates(db)
    return db


def _meta(home) -> dict:
    return json.loads((home / "bodhi_nb.db.json").read_text())["_meta"]["1"]


@pytest.fixture
def file_store(bodhi_home, upstream):
    """A store whose secret is the key file ($BODHI_HOME/.secret_key)."""
    db = ConfigStore(bodhi_home, kdf_iterations=FAST_KDF)
    assert db.master_secret.origin == "file"
    _seed(db, upstream)
    return db


def _key_file(home) -> str:
    return (home / ".secret_key").read_text().strip()


# -- the happy path ----------------------------------------------------------------------------


def test_rotation_saves_the_new_secret_then_reencrypts(file_store, bodhi_home):
    old = _key_file(bodhi_home)
    before = _meta(bodhi_home)
    res = file_store.rotate_master_key()
    assert res.reencrypted == 5 and res.skipped == [] and res.generation == before["key_generation"] + 1
    assert str(bodhi_home / ".secret_key") in res.message()
    new = _key_file(bodhi_home)
    assert new != old and res.secret.value == new
    after = _meta(bodhi_home)
    assert "pending_key" not in after and after["kdf_salt"] != before["kdf_salt"]
    assert file_store.get_api_key("up") == TEST_KEY  # the rotating process moved on too
    assert_intact(bodhi_home)
    with pytest.raises(BodhiError, match="does not open"):
        ConfigStore(bodhi_home, old, kdf_iterations=FAST_KDF)


def test_a_stray_secret_key_tmp_directory_does_not_get_in_the_way(file_store, bodhi_home):
    (bodhi_home / ".secret_key.tmp").mkdir()
    file_store.rotate_master_key()
    assert_intact(bodhi_home)


def test_new_secret_is_validated_without_changing_anything(file_store, bodhi_home):
    raw = (bodhi_home / "bodhi_nb.db.json").read_bytes()
    for bad in ("short", "has a space in the middle of it", file_store.master_secret.value):
        with pytest.raises(InvalidRequestError):
            file_store.rotate_master_key(bad)
    assert (bodhi_home / "bodhi_nb.db.json").read_bytes() == raw


# -- each step made to fail (in process) -----------------------------------------------------


def _boom(*a, **k):
    raise StoreError("injected failure")


def test_failing_to_write_the_pending_slot_changes_nothing(file_store, bodhi_home, monkeypatch):
    old = _key_file(bodhi_home)
    monkeypatch.setattr(_rotation, "write_pending", _boom)
    with pytest.raises(StoreError, match="injected"):
        file_store.rotate_master_key()
    monkeypatch.undo()
    assert _key_file(bodhi_home) == old and "pending_key" not in _meta(bodhi_home)
    assert_intact(bodhi_home)


def _key_file_only(monkeypatch, where: str, err: OSError) -> None:
    """Make one OS call fail, but only for the key file (the store's own writes go through)."""
    real = {"mkstemp": master_key.tempfile.mkstemp, "write": master_key.os.fsync,
            "replace": master_key.os.replace}[where]

    def is_key_file(a, k) -> bool:
        if where == "mkstemp":
            return str(k.get("prefix", "")).startswith(".secret_key")
        if where == "write":
            return ".secret_key." in os.readlink(f"/proc/self/fd/{a[0]}")
        return str(a[1]).endswith(".secret_key")

    def fake(*a, **k):
        if is_key_file(a, k):
            raise err
        return real(*a, **k)

    if where == "mkstemp":
        monkeypatch.setattr(master_key.tempfile, "mkstemp", fake)
    elif where == "write":
        monkeypatch.setattr(master_key.os, "fsync", fake)
    else:
        monkeypatch.setattr(master_key.os, "replace", fake)


@pytest.mark.parametrize("where", ["mkstemp", "write", "replace"])
def test_failing_to_save_the_key_file_is_one_line_and_rolls_back(file_store, bodhi_home, monkeypatch, where):
    old = _key_file(bodhi_home)
    _key_file_only(monkeypatch, where, OSError(28, "No space left on device"))
    with pytest.raises(StoreError) as ei:
        file_store.rotate_master_key()
    monkeypatch.undo()
    msg = ei.value.message
    assert "\n" not in msg and "No space left on device" in msg and "run `bodhi-nb rotate-key` again" in msg
    assert "before anything changed" in msg
    assert _key_file(bodhi_home) == old and "pending_key" not in _meta(bodhi_home)
    assert not [p for p in bodhi_home.iterdir() if p.name.startswith(".secret_key.") and p.is_file()]
    assert_intact(bodhi_home)


def test_an_error_after_the_key_file_was_saved_still_completes(file_store, bodhi_home, monkeypatch):
    def fail_after_replace(path):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(master_key, "_fsync_dir", fail_after_replace)
    res = file_store.rotate_master_key()
    monkeypatch.undo()
    assert _key_file(bodhi_home) == res.secret.value and "pending_key" not in _meta(bodhi_home)
    assert_intact(bodhi_home)


def test_failing_commit_is_finished_by_the_next_open(file_store, bodhi_home, monkeypatch):
    gen = _meta(bodhi_home)["key_generation"]
    monkeypatch.setattr(_rotation, "commit", _boom)
    with pytest.raises(StoreError, match="finishes the next time") as ei:
        file_store.rotate_master_key()
    monkeypatch.undo()
    assert "\n" not in ei.value.message
    assert "pending_key" in _meta(bodhi_home)  # records still under the old key, new secret saved
    assert_intact(bodhi_home)  # opened with the new secret from the key file: finished the rotation
    assert "pending_key" not in _meta(bodhi_home) and _meta(bodhi_home)["key_generation"] == gen + 1


def test_commit_that_cannot_be_finished_at_open_still_serves_under_the_old_key(file_store, bodhi_home,
                                                                                 monkeypatch):
    monkeypatch.setattr(_rotation, "commit", _boom)
    with pytest.raises(StoreError):
        file_store.rotate_master_key()
    assert_intact(bodhi_home)  # commit still failing: the unwrapped old key serves the records
    monkeypatch.undo()
    assert_intact(bodhi_home)
    assert "pending_key" not in _meta(bodhi_home)


def test_failed_save_and_failed_undo_leave_a_harmless_slot(file_store, bodhi_home, monkeypatch):
    old = _key_file(bodhi_home)
    monkeypatch.setattr(_rotation, "persist", _boom)
    monkeypatch.setattr(_rotation, "drop_pending", _boom)
    with pytest.raises(StoreError, match="before anything changed"):
        file_store.rotate_master_key()
    monkeypatch.undo()
    assert _key_file(bodhi_home) == old and "pending_key" in _meta(bodhi_home)
    db = assert_intact(bodhi_home)
    db.rotate_master_key()  # a later rotation replaces the leftover slot
    assert "pending_key" not in _meta(bodhi_home)
    assert_intact(bodhi_home)


def test_cli_rotate_key_failure_is_one_line(file_store, bodhi_home, monkeypatch, capsys):
    from bodhi_nb.cli import main

    _key_file_only(monkeypatch, "replace", IsADirectoryError(21, "Is a directory"))
    assert main(["--home", str(bodhi_home), "rotate-key"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error (") and "Is a directory" in err and "Traceback" not in err
    monkeypatch.undo()
    assert_intact(bodhi_home)
    assert main(["--home", str(bodhi_home), "rotate-key"]) == 0
    assert "Re-encrypted 5 API keys" in capsys.readouterr().out
    assert_intact(bodhi_home)


def test_keyring_locked_at_rotation(bodhi_home, upstream, memory_keyring):
    """An in-memory keyring stands in for the OS one (the OS edge)."""
    db = ConfigStore(bodhi_home, kdf_iterations=FAST_KDF)
    assert db.master_secret.origin == "keyring"
    _seed(db, upstream)
    old = load_master_secret(bodhi_home).value
    memory_keyring.locked = True
    with pytest.raises(StoreError, match="unlock the keyring") as ei:
        db.rotate_master_key()
    assert "\n" not in ei.value.message and "before anything changed" in ei.value.message
    assert load_master_secret(bodhi_home).value == old and "pending_key" not in _meta(bodhi_home)
    assert_intact(bodhi_home)
    memory_keyring.locked = False
    res = db.rotate_master_key()
    assert load_master_secret(bodhi_home).value == res.secret.value != old
    assert_intact(bodhi_home)


def test_env_secret_announce_failure_rolls_back(bodhi_home, upstream, monkeypatch):
    monkeypatch.setenv("BODHI_ENCRYPTION_KEY", TEST_SECRET)
    db = ConfigStore(bodhi_home, kdf_iterations=FAST_KDF)
    _seed(db, upstream)
    with pytest.raises(InvalidRequestError, match="BODHI_NEW_ENCRYPTION_KEY"):
        db.rotate_master_key()  # nobody to hand a generated secret to

    def announce(value):
        raise OSError(32, "Broken pipe")

    with pytest.raises(StoreError, match="before anything changed"):
        db.rotate_master_key(announce=announce)
    assert "pending_key" not in _meta(bodhi_home)
    assert_intact(bodhi_home)
    told = []
    res = db.rotate_master_key(announce=told.append)
    assert told == [res.secret.value] and "set BODHI_ENCRYPTION_KEY" in res.message()
    monkeypatch.setenv("BODHI_ENCRYPTION_KEY", told[0])
    assert_intact(bodhi_home)


def test_an_undecryptable_record_does_not_block_rotation(file_store, bodhi_home):
    data = json.loads(file_store.path.read_text())
    data["api_model_aliases"]["other-0"]["api_key"] = data["api_model_aliases"]["other-1"]["api_key"]
    LockedJSONStorage(file_store.path).write(data)
    res = file_store.rotate_master_key()
    assert res.skipped == ["other-0"] and res.reencrypted == 4 and "other-0" in res.message()
    db = ConfigStore(bodhi_home, kdf_iterations=FAST_KDF)
    assert db.get_api_key("other-1") == OTHER_KEYS["other-1"]
    _authenticates(db)
    db.update("other-0", {}, api_key=OTHER_KEYS["other-0"])  # repaired
    assert_intact(bodhi_home)


# -- other processes see the rotation --------------------------------------------------------------


def test_the_loop_reads_a_key_decrypted_once_per_snapshot_and_never_a_stale_one(file_store, bodhi_home,
                                                                                 monkeypatch):
    from bodhi_nb.services.db import KeyNotReady
    from bodhi_nb.services.db._encryption import RecordCipher

    decrypts = []
    real = RecordCipher.decrypt
    monkeypatch.setattr(RecordCipher, "decrypt", lambda self, *a: decrypts.append(a) or real(self, *a))
    server = ConfigStore(bodhi_home, kdf_iterations=FAST_KDF)  # the Jupyter server's store
    server.refresh_index()
    decrypts.clear()  # (opening the store checks the secret against a record of its own)
    up = server.find_by_served_name("echo")[0]  # resolved, as the gateway resolves a name
    assert [server.indexed_api_key(up) for _ in range(3)] == [TEST_KEY] * 3
    assert len(decrypts) == 1  # one decryption for the snapshot, not one per request
    file_store.update("up", {}, api_key="sk-changed-0123456789")  # another process changes the key
    assert not server.index_is_current()
    server.refresh_index()
    with pytest.raises(KeyNotReady):  # resolved from the snapshot before: its key is not given out
        server.indexed_api_key(up)
    up = server.find_by_served_name("echo")[0]  # resolved again, from the new snapshot
    assert server.indexed_api_key(up) == "sk-changed-0123456789"
    file_store.rotate_master_key()  # another process rotates the master key: no cipher for it yet
    server.refresh_index()
    up = server.find_by_served_name("echo")[0]
    with pytest.raises(KeyNotReady):
        server.indexed_api_key(up)  # the loop hands it to a thread (server_core/gateway.py)
    assert server.get_api_key("up") == "sk-changed-0123456789"
    assert server.indexed_api_key(up) == "sk-changed-0123456789"


def test_key_file_process_reloads_the_new_secret(file_store, bodhi_home):
    other = ConfigStore(bodhi_home, kdf_iterations=FAST_KDF)  # e.g. the Jupyter server
    assert other.get_api_key("up") == TEST_KEY
    file_store.rotate_master_key()
    assert other.get_api_key("up") == TEST_KEY  # reloaded from the key file, no restart
    other.create(ApiModelAlias(id="after", base_url="http://127.0.0.1:9/v1", models=["a"]), "sk-after-0123456789")
    assert ConfigStore(bodhi_home, kdf_iterations=FAST_KDF).get_api_key("after") == "sk-after-0123456789"
    assert other.key_generation == file_store.key_generation


@pytest.mark.parametrize("origin", ["env", "argument"])
def test_a_stale_fixed_secret_process_refuses_and_writes_nothing(bodhi_home, upstream, monkeypatch, origin):
    if origin == "env":
        monkeypatch.setenv("BODHI_ENCRYPTION_KEY", TEST_SECRET)
        stale = ConfigStore(bodhi_home, kdf_iterations=FAST_KDF)
    else:
        stale = ConfigStore(bodhi_home, TEST_SECRET, kdf_iterations=FAST_KDF)
    _seed(stale, upstream)
    rotator = ConfigStore(bodhi_home, TEST_SECRET, kdf_iterations=FAST_KDF)
    rotator.rotate_master_key("the-new-master-secret-0123456789")
    raw = stale.path.read_bytes()
    calls = [
        lambda: stale.get_api_key("up"),
        lambda: stale.list(),
        lambda: stale.record("up"),
        lambda: stale.create(ApiModelAlias(id="late", base_url="http://127.0.0.1:9/v1", models=["l"]), TEST_KEY),
        lambda: stale.update("up", {"models": ["echo", "x"]}, api_key=TEST_KEY),
        lambda: stale.update("up", {"models": ["echo", "x"]}),
        lambda: stale.delete("other-0"),
        lambda: stale.rotate_master_key("yet-another-master-secret-0123"),
    ]
    for call in calls:
        with pytest.raises(MasterKeyRotatedError) as ei:
            call()
        assert ei.value.status == 503 and ei.value.to_envelope()["error"]["code"] == "master_key_rotated"
        if origin == "env":
            assert ei.value.message == ("The master key was rotated by another process; restart with the new "
                                        "BODHI_ENCRYPTION_KEY.")
    assert stale.path.read_bytes() == raw  # never wrote under the stale key
    assert [a.id for a in stale.find_by_served_name("echo")] == ["up"]  # routing needs no key
    monkeypatch.setenv("BODHI_ENCRYPTION_KEY", "the-new-master-secret-0123456789")
    assert_intact(bodhi_home, None if origin == "env" else "the-new-master-secret-0123456789")


def test_env_process_given_the_new_value_in_its_environment_keeps_working(bodhi_home, upstream, monkeypatch):
    monkeypatch.setenv("BODHI_ENCRYPTION_KEY", TEST_SECRET)
    kernel = ConfigStore(bodhi_home, kdf_iterations=FAST_KDF)
    _seed(kernel, upstream)
    ConfigStore(bodhi_home, TEST_SECRET, kdf_iterations=FAST_KDF).rotate_master_key("the-new-master-secret-0123456789")
    monkeypatch.setenv("BODHI_ENCRYPTION_KEY", "the-new-master-secret-0123456789")  # %env in a kernel
    assert kernel.get_api_key("up") == TEST_KEY


# -- real processes killed -------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import os, sys, time
    from bodhi_nb.services.db import ConfigStore, _rotation, master_key
    home, kill_at = sys.argv[1], sys.argv[2]

    def die():
        os._exit(9)

    def wrap(mod, name, when):
        fn = getattr(mod, name)
        def wrapped(*a, **k):
            if name == "replace" and not str(a[1]).endswith(".secret_key"):
                return fn(*a, **k)  # the store's own writes go through
            if when == "before":
                die()
            fn(*a, **k)
            die()
        setattr(mod, name, wrapped)

    if ":" in kill_at:
        when, name = kill_at.split(":")
        mod = master_key.os if name == "replace" else master_key if name == "_fsync_dir" else _rotation
        wrap(mod, name, when)
    else:  # report progress (for the test's summary only; nothing asserts on where it died)
        for name in ("write_pending", "persist", "commit"):
            def traced(*a, _fn=getattr(_rotation, name), _name=name, **k):
                r = _fn(*a, **k)
                print("done", _name, flush=True)
                return r
            setattr(_rotation, name, traced)
    db = ConfigStore(home, kdf_iterations=int(os.environ["KDF"]))
    print("ready", flush=True)
    if kill_at == "random":
        sys.stdin.readline()
    t = time.perf_counter()
    db.rotate_master_key(announce=lambda v: print("NEW", v, flush=True))
    print("took", time.perf_counter() - t, flush=True)
""")


def _child(home, kill_at: str, env: dict[str, str]) -> subprocess.Popen:
    e = {**os.environ, "KDF": str(FAST_KDF), "BODHI_NO_KEYRING": "1", **env}
    if "BODHI_ENCRYPTION_KEY" not in env:
        e.pop("BODHI_ENCRYPTION_KEY", None)
    return subprocess.Popen([sys.executable, "-c", CHILD, str(home), kill_at], env=e, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def _told(out: str) -> str | None:
    news = [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("NEW ") and len(line) > 24]
    return news[-1] if news else None


FILE_KILL_POINTS = ["before:write_pending", "after:write_pending", "before:replace", "after:replace",
                    "after:_fsync_dir", "after:persist", "before:commit", "after:commit"]


@pytest.mark.parametrize("kill_at", FILE_KILL_POINTS)
def test_key_file_rotation_killed_at_each_step(file_store, bodhi_home, kill_at):
    p = _child(bodhi_home, kill_at, {})
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 9, out  # it really died at that point
    db = assert_intact(bodhi_home)  # the key file's secret opens it, every key intact
    if kill_at in ("after:replace", "after:_fsync_dir", "after:persist", "before:commit", "after:commit"):
        assert "pending_key" not in _meta(bodhi_home) and db.key_generation == 1  # finished at open
    else:
        assert db.key_generation == 0


@pytest.mark.parametrize("kill_at", ["after:write_pending", "after:persist", "after:commit"])
def test_env_rotation_killed_at_each_step(bodhi_home, upstream, monkeypatch, kill_at):
    monkeypatch.setenv("BODHI_ENCRYPTION_KEY", TEST_SECRET)
    _seed(ConfigStore(bodhi_home, kdf_iterations=FAST_KDF), upstream)
    p = _child(bodhi_home, kill_at, {"BODHI_ENCRYPTION_KEY": TEST_SECRET})
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 9, out
    told = _told(out)
    assert (told is None) == (kill_at == "after:write_pending")
    if told is None:
        assert_intact(bodhi_home)  # the user still holds the old secret, and it works
    else:
        monkeypatch.setenv("BODHI_ENCRYPTION_KEY", told)  # the user set what they were told
        assert_intact(bodhi_home)
        assert "pending_key" not in _meta(bodhi_home)


@pytest.mark.parametrize("mode", ["file", "env"])
def test_rotation_sigkilled_at_random_moments(bodhi_home, upstream, monkeypatch, mode):
    """Fault injection: a random delay decides where the kill lands; the assertions hold wherever."""
    env: dict[str, str] = {}
    if mode == "env":
        env["BODHI_ENCRYPTION_KEY"] = TEST_SECRET
        monkeypatch.setenv("BODHI_ENCRYPTION_KEY", TEST_SECRET)
    db = ConfigStore(bodhi_home, kdf_iterations=FAST_KDF)
    _seed(db, upstream)
    for i in range(200):  # bulk, so a rotation takes long enough to be hit in the middle
        db.create(ApiModelAlias(id=f"bulk-{i}", base_url="http://127.0.0.1:9/v1", models=[f"b{i}"]), f"sk-bulk-{i:04d}-xyz")
    p = _child(bodhi_home, "random", env)
    assert p.stdout.readline().strip() == "ready"
    p.stdin.write("go\n")
    p.stdin.flush()
    out, _ = p.communicate(timeout=60)
    took = float(out.split("took", 1)[1])
    if mode == "env":
        env["BODHI_ENCRYPTION_KEY"] = _told(out)
    rng = random.Random(1234 + len(mode))
    reached: dict[str, int] = {}
    for _ in range(15):
        p = _child(bodhi_home, "random", env)
        assert p.stdout.readline().strip() == "ready"
        p.stdin.write("go\n")
        p.stdin.flush()
        try:
            p.wait(timeout=rng.uniform(0, took * 1.3))
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
        rest, _ = p.communicate(timeout=60)
        last = ([line.split()[1] for line in rest.splitlines() if line.startswith("done ")] or ["start"])[-1]
        reached[last] = reached.get(last, 0) + 1
        if mode == "env":
            told = _told(rest)
            if told is not None:  # the user was shown the new secret: they now hold it
                env["BODHI_ENCRYPTION_KEY"] = told
            monkeypatch.setenv("BODHI_ENCRYPTION_KEY", env["BODHI_ENCRYPTION_KEY"])
        else:
            load_master_secret(bodhi_home)
        fresh = ConfigStore(bodhi_home, kdf_iterations=FAST_KDF)
        assert fresh.get_api_key("up") == TEST_KEY
        assert {i: fresh.get_api_key(i) for i in OTHER_KEYS} == OTHER_KEYS
        assert fresh.get_api_key("bulk-199") == "sk-bulk-0199-xyz"
        _authenticates(fresh)
    print(f"{mode}: last step reached before the kill {reached}; one rotation took {took:.3f} s")
