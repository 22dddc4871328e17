"""Helpers for tests that start real servers: starting one of the fake servers beside this
file, a free loopback port, waiting until a server answers (a bounded readiness poll of
another process, not test synchronisation), and telling whether a process is gone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

RESOURCES = Path(__file__).resolve().parent


def start_fake(script: str, *args: str) -> tuple[subprocess.Popen, int]:
    """Run tests/resources/`script` (fake_openai.py, fake_hub.py, batch_upstream.py: each
    listens on a free loopback port and prints `PORT n` once it does); return it and n."""
    proc = subprocess.Popen([sys.executable, str(RESOURCES / script), *args], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("PORT "), line
    return proc, int(line.split()[1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http_ok(url: str, proc: subprocess.Popen, *, headers: dict[str, str] | None = None,
                 timeout: float = 90.0, log: Path | None = None) -> httpx.Response:
    """GET `url` until it answers 200; fail with the process log if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url, headers=headers, trust_env=False)
            if r.status_code == 200:
                return r
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, f"{proc.args} exited:\n" + (log.read_text()[-3000:] if log else "")
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer 200 within {timeout} s\n" + (log.read_text()[-3000:] if log else ""))


def wait_for(cond, timeout: float = 20.0, what: str = "condition", interval: float = 0.02):  # type: ignore[no-untyped-def]
    """Poll `cond` until it returns something truthy, and return that; fail naming `what`
    after `timeout` seconds (a bounded poll of a condition, never a sleep as synchronisation)."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def process_gone(pid: int) -> bool:
    """No such process, or only its exit status left (a zombie runs nothing)."""
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return st.rsplit(")", 1)[-1].split()[0] == "Z"


def start_jupyter(home: Path, tmp: Path, *options: str, env: dict[str, str] | None = None,
                  port: int | None = None, token: str | None = None) -> tuple[subprocess.Popen, str, dict[str, str]]:
    """A Jupyter server process with the bodhi_nb extension over `home` (its log in tmp/server-N.log):
    the process, the gateway URL and the auth headers, once `models` answers."""
    import secrets

    port = port or free_port()
    token = token or secrets.token_hex(16)
    tmp.mkdir(parents=True, exist_ok=True)
    log = tmp / f"server-{port}-{time.monotonic_ns()}.log"
    environ = {**os.environ, "BODHI_HOME": str(home), "BODHI_ENCRYPTION_KEY": "test-master-secret-0123456789",
               "JUPYTER_RUNTIME_DIR": str(tmp / "rt"), "BODHI_NO_KEYRING": "1", **(env or {})}
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", f"--port={port}", "--ip=127.0.0.1", "--ServerApp.open_browser=False",
             f"--IdentityProvider.token={token}", "--ServerApp.jpserver_extensions={'bodhi_nb': True}",
             "--BodhiExtension.kdf_iterations=1000", "--allow-root", *options],
            env=environ, stdout=subprocess.DEVNULL, stderr=err)
    gw = f"http://127.0.0.1:{port}/bodhi/v1"
    headers = {"Authorization": f"Bearer {token}"}
    wait_http_ok(f"{gw}/models", proc, headers=headers, log=log)
    return proc, gw, headers
