"""The store shared by the Jupyter server and kernels: real processes on one file."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from bodhi_nb.services.db import ConfigStore
from tests.conftest import FAST_KDF, TEST_SECRET

WRITER = Path(__file__).parent / "helpers" / "store_writer.py"


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WRITER), *args], stdout=subprocess.PIPE, text=True)


def test_four_processes_times_100_creates(bodhi_home):
    ConfigStore(bodhi_home, TEST_SECRET, kdf_iterations=FAST_KDF)  # create + key check first
    procs = [_spawn(str(bodhi_home), TEST_SECRET, "create", f"p{n}-", "100") for n in range(4)]
    for p in procs:
        out, _ = p.communicate(timeout=240)
        assert p.returncode == 0 and out.strip() == "done"
    data = json.loads((bodhi_home / "bodhi_nb.db.json").read_text())
    assert len(data["api_model_aliases"]) == 400
    db = ConfigStore(bodhi_home, TEST_SECRET, kdf_iterations=FAST_KDF)
    assert db.list(page_size=1000)[1] == 400
    assert db.get_api_key("p3-99") == "sk-p3--0099-abcdefgh"


def test_writer_killed_mid_write_never_leaves_an_unreadable_file(bodhi_home):
    ConfigStore(bodhi_home, TEST_SECRET, kdf_iterations=FAST_KDF)
    path = bodhi_home / "bodhi_nb.db.json"
    for round_ in range(5):
        p = _spawn(str(bodhi_home), TEST_SECRET, "churn")
        # Wait until the child has really written (a line per completed write), then kill
        # it wherever it is: inside a write, between writes, holding the lock.
        for _ in range(20 + round_ * 7):
            assert p.stdout.readline()
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        data = json.loads(path.read_text())  # parses: never half-written
        assert "churn" in data["api_model_aliases"]
        db = ConfigStore(bodhi_home, TEST_SECRET, kdf_iterations=FAST_KDF)
        assert db.get_api_key("churn").startswith("sk-churn-key-")
        # the lock held by the killed process was released by the OS
        db.update("churn", {"models": ["after-kill"]})
        assert db.get("churn").models == ["after-kill"]
