"""`bodhi-nb hub-service`: the gateway alone, as a JupyterHub service that holds a team's keys.

It is a jupyter_server `ServerApp` with only the bodhi_nb extension and none of the
notebook services (no contents, kernels or terminals: nobody can run code next to the
store), authenticated the way JupyterHub's own single-user servers are: JupyterHub's
identity provider (its tokens and OAuth, `jupyterhub.services.auth`), and an authorizer
that lets anyone holding the service's access scope use it and only the admin group
manage it (docs/ARCHITECTURE.md, "The JupyterHub service").

The hub starts it (a managed service) or an admin runs it beside the hub (an external
one) with the environment JupyterHub gives every service: JUPYTERHUB_API_TOKEN,
JUPYTERHUB_API_URL, JUPYTERHUB_SERVICE_NAME, JUPYTERHUB_SERVICE_URL,
JUPYTERHUB_SERVICE_PREFIX and the OAuth client settings.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlparse

from jupyter_server.serverapp import ServerApp
from jupyterhub.singleuser.extension import JupyterHubAuthorizer, JupyterHubIdentityProvider
from traitlets import List, Unicode, default

from ._base import MANAGE_RESOURCE, SERVICES_KEY

__all__ = ["BodhiHubAuthorizer", "HubServiceApp", "main"]

DEFAULT_ADMIN_GROUP = "bodhi-admins"


class BodhiHubAuthorizer(JupyterHubAuthorizer):
    """The hub's access scope for everything (JupyterHub's own check), and for managing the
    gateway also membership of one of `admin_groups`, as the hub reports the user's groups."""

    admin_groups = List(Unicode(), [DEFAULT_ADMIN_GROUP], config=True,
                        help="JupyterHub groups whose members may manage the gateway: API models, aliases, router "
                             "aliases, pulls, prices and budgets.")

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        if not super().is_authorized(handler, user, action, resource):
            return False
        if resource == MANAGE_RESOURCE:
            groups = set(getattr(user, "hub_user", {}).get("groups") or ())
            return bool(groups & set(self.admin_groups))
        return True


class HubServiceApp(ServerApp):
    """A Jupyter server that serves the gateway and nothing else, behind JupyterHub's auth."""

    name = "bodhi-nb-hub-service"
    description = "The bodhi_nb gateway as a JupyterHub service: one store of keys for every user."
    # Only the login machinery: no contents, files, kernels, sessions, terminals or nbconvert.
    default_services = ("auth",)  # type: ignore[assignment]  # documented: subclasses may expose fewer

    @default("identity_provider_class")
    def _identity_provider(self) -> type:
        return JupyterHubIdentityProvider

    @default("authorizer_class")
    def _authorizer(self) -> type:
        return BodhiHubAuthorizer

    @default("ip")
    def _ip(self) -> str:
        return urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL") or "http://127.0.0.1:10101").hostname or "127.0.0.1"

    @default("port")
    def _port(self) -> int:
        return urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL") or "http://127.0.0.1:10101").port or 10101

    @default("base_url")
    def _base_url(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX") or "/services/bodhi/"

    @default("open_browser")
    def _no_browser(self) -> bool:
        return False

    @default("allow_remote_access")
    def _remote(self) -> bool:
        return True  # requests come through JupyterHub's proxy; the hub's tokens and OAuth protect every route

    @default("terminals_enabled")
    def _no_terminals(self) -> bool:
        return False

    def initialize(self, argv: list[str] | None = None, *args: Any, **kwargs: Any) -> None:
        """As a Jupyter server, but a gateway that failed to load (a bad option, an unreadable store)
        stops the service with that one line, instead of serving 404s in its place."""
        super().initialize(argv, *args, **kwargs)
        if self._dispatching:
            return
        if SERVICES_KEY not in self.web_app.settings:
            self.log.critical("bodhi-nb hub-service: the gateway did not load; see the message above.")
            self.exit(1)
        # As JupyterHub's single-user servers do: tornado's own XSRF check runs before the user is known
        # (so before a token request is recognised); jupyter_server checks XSRF again, after auth, always.
        self.web_app.settings["xsrf_cookies"] = False
        self.web_app.settings.setdefault("headers", {}).setdefault("Content-Security-Policy", "frame-ancestors 'none'")

    def find_server_extensions(self) -> None:
        """Exactly the gateway, in hub mode (addresses checked, per-user accounting, no forwarding
        to a hub: it is the hub's). Extensions enabled in the machine's Jupyter config (JupyterLab,
        terminals, ...) are not loaded here."""
        self.jpserver_extensions = {"bodhi_nb": True}
        self.config.BodhiExtension.hub_service = True


def main(argv: list[str] | None = None) -> None:
    """Run the hub service (JupyterHub passes its settings in the environment)."""
    HubServiceApp.launch_instance(argv)


if __name__ == "__main__":
    main()
