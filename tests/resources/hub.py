"""A real JupyterHub on 127.0.0.1 for the hub service's tests and benchmark.

JupyterHub itself (the `jupyterhub` package, with configurable-http-proxy from npm), its
dummy authenticator and SimpleLocalProcessSpawner (user servers as local processes,
each with its own home under the test's directory), the bodhi service managed by the
hub (`bodhi-nb hub-service`), and a `driver` service whose token the test uses to make
users' tokens and start their servers, as an admin script would.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .servers import free_port, wait_http_ok

SERVICE = "bodhi"
ADMIN_GROUP = "bodhi-admins"
VENV_BIN = Path(sys.executable).parent


def proxy_available() -> bool:
    return shutil.which("configurable-http-proxy") is not None


@dataclass
class Hub:
    root: Path
    users: tuple[str, ...]
    admins: tuple[str, ...]
    allow: tuple[str, ...] = ("127.0.0.1",)
    secret: str = "hub-service-master-secret-0123456789"
    port: int = field(default_factory=free_port)
    hub_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    service_port: int = field(default_factory=free_port)
    driver_token: str = field(default_factory=lambda: secrets.token_hex(16))
    proc: subprocess.Popen | None = None
    tokens: dict[str, str] = field(default_factory=dict)

    # -- where things are ----------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.url}/hub/api"

    @property
    def service_home(self) -> Path:
        return self.root / "service-home"

    @property
    def service_gateway(self) -> str:
        """The service's gateway, reached through the hub's proxy."""
        return f"{self.url}/services/{SERVICE}/bodhi/v1"

    def home(self, user: str) -> Path:
        return self.root / "home" / user

    def log(self) -> str:
        return (self.root / "hub.log").read_text(errors="replace")[-4000:]

    # -- running -------------------------------------------------------------------------

    def start(self) -> Hub:
        self.root.mkdir(parents=True, exist_ok=True)
        self.service_home.mkdir(exist_ok=True)
        config = self.root / "jupyterhub_config.py"
        config.write_text(self._config())
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BODHI_", "JUPYTER"))}
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        with open(self.root / "hub.log", "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(config)], cwd=self.root,
                                         env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_http_ok(f"{self.api}/", self.proc, timeout=120, log=self.root / "hub.log")
        self.wait_service()
        return self

    def wait_service(self, timeout: float = 120) -> None:
        """Until the bodhi service answers through the proxy (the hub starts and restarts it)."""
        assert self.proc is not None
        wait_http_ok(f"{self.service_gateway}/models", self.proc, headers=self.auth(self.driver_token),
                     timeout=timeout, log=self.root / "hub.log")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # the hub stops its services, servers and proxy
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    # -- the hub's API, as an admin script ------------------------------------------------

    @staticmethod
    def auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def hub_api(self, method: str, path: str, **kw) -> httpx.Response:  # type: ignore[no-untyped-def]
        return httpx.request(method, f"{self.api}/{path}", headers=self.auth(self.driver_token), trust_env=False,
                             timeout=60, **kw)

    def token(self, user: str) -> str:
        """An API token of `user` (with every scope the user holds), made once."""
        if user not in self.tokens:
            r = self.hub_api("POST", f"users/{user}/tokens", json={"note": "test"})
            assert r.status_code in (200, 201), r.text
            self.tokens[user] = r.json()["token"]
        return self.tokens[user]

    def start_server(self, user: str, timeout: float = 120) -> dict:
        """Start `user`'s server and wait until the hub says it is ready; its model (with state)."""
        r = self.hub_api("POST", f"users/{user}/server")
        assert r.status_code in (201, 202, 400), r.text  # 400: already running
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.hub_api("GET", f"users/{user}").json()
            server = (model.get("servers") or {}).get("")
            if server and server.get("ready"):
                return server
            assert self.proc is not None and self.proc.poll() is None, self.log()
            time.sleep(0.25)  # a bounded readiness poll of another process
        raise AssertionError(f"{user}'s server did not become ready\n{self.log()}")

    def server_url(self, user: str) -> str:
        return f"{self.url}/user/{user}/"

    def service_pid(self) -> int | None:
        r = self.hub_api("GET", f"services/{SERVICE}")
        return r.json().get("pid") if r.status_code == 200 else None

    def _config(self) -> str:
        users, admins = list(self.users), list(self.admins)
        member_scopes = [f"access:services!service={SERVICE}", f"read:services!service={SERVICE}"]
        spawner_args = ["--ServerApp.jpserver_extensions={'bodhi_nb': True, 'jupyterlab': False, "
                        "'jupyter_lsp': False, 'notebook_shim': False, 'jupyter_server_terminals': False}",
                        "--BodhiExtension.kdf_iterations=1000", *(["--allow-root"] if os.geteuid() == 0 else [])]
        service_cmd = [str(VENV_BIN / "bodhi-nb"), "--home", str(self.service_home), "hub-service",
                       *(a for addr in self.allow for a in ("--allow", addr)), "--BodhiExtension.kdf_iterations=1000"]
        service_env = {"BODHI_ENCRYPTION_KEY": self.secret, "BODHI_NO_KEYRING": "1",
                       "HF_HOME": str(self.root / "service-hf")}
        user_env = {"BODHI_NO_KEYRING": "1", "BODHI_ENCRYPTION_KEY": "a-users-own-store-secret-0123456789"}
        return f"""
c = get_config()  # noqa
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {self.port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {self.hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.api_port}"
c.JupyterHub.db_url = "sqlite:///{self.root / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = "{self.root / 'cookie_secret'}"
c.JupyterHub.pid_file = "{self.root / 'hub.pid'}"
c.JupyterHub.cleanup_servers = True
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allowed_users = {set(users + admins)!r}
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = "{self.root / 'home'}/{{username}}"
c.Spawner.cmd = [{str(VENV_BIN / 'jupyterhub-singleuser')!r}]
c.Spawner.args = {spawner_args!r}
c.Spawner.environment = {user_env!r}
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
# what a user's server token may do: its own server, and use (and find) the bodhi service
c.Spawner.server_token_scopes = ["access:servers!server", "users:activity!user", *{member_scopes!r}]
c.JupyterHub.load_groups = {{{ADMIN_GROUP!r}: {{"users": {admins!r}}}, "team": {{"users": {users!r}}}}}
c.JupyterHub.load_roles = [
    {{"name": "user", "scopes": ["self", *{member_scopes!r}]}},
    {{"name": "driver", "services": ["driver"],
     "scopes": ["admin:users", "admin:servers", "admin:server_state", "tokens", "read:services",
                "access:services"]}},
]
c.JupyterHub.services = [
    {{"name": {SERVICE!r}, "url": "http://127.0.0.1:{self.service_port}", "command": {service_cmd!r},
     "environment": {service_env!r}, "oauth_no_confirm": True}},
    {{"name": "driver", "api_token": {self.driver_token!r}}},
]
"""


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
