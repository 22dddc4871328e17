"""`bodhi-nb`: start JupyterLab or a gateway-only server, manage models from a shell.

Keys are read from an environment variable or a hidden prompt, never from argv (which
lands in shell history and `ps`). Errors print one line and exit 1; usage errors exit 2.
"""

from __future__ import annotations

import argparse
import getpass
import importlib.util
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

from .objs.api_model_alias import ApiFormat
from .objs.errors import BodhiError, InvalidRequestError
from .objs.urls import gateway_url

__all__ = ["main"]

QUICKSTART = Path("notebooks") / "01_quickstart.ipynb"
API_FORMATS = [f.value for f in ApiFormat]


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _read_key(args: argparse.Namespace, required: bool) -> str | None:
    if getattr(args, "no_key", False):
        return None
    env = os.environ.get(args.api_key_env)
    if env:
        return env
    if not sys.stdin.isatty():
        if required:
            raise BodhiError(f"No API key: set {args.api_key_env} or run in a terminal to be prompted.")
        return None
    key = getpass.getpass("API key (leave empty for none): " if not required else "API key: ")
    return key or None


def _bodhi(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from .notebook.client import Bodhi

    return Bodhi(args.home)


# -- commands -------------------------------------------------------------------------------


def cmd_lab(args: argparse.Namespace) -> int:
    # Serve the whole checkout and land on the quickstart (a file argument would narrow the root to notebooks/).
    target = [f"--LabApp.default_url=/lab/tree/{QUICKSTART.as_posix()}"] if QUICKSTART.exists() else []
    root = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []  # containers, CI
    cmd = [sys.executable, "-m", "jupyterlab", *target, *root, *args.rest]
    print("Starting JupyterLab" + (f" on {QUICKSTART}" if target else "") + " ...", file=sys.stderr)
    os.execv(sys.executable, cmd)
    return 0  # pragma: no cover


def cmd_serve(args: argparse.Namespace) -> int:
    token = os.environ.get("JUPYTER_TOKEN") or secrets.token_hex(24)
    base = gateway_url(f"http://{args.ip}:{args.port}/")
    print(f"OpenAI base URL: {base}\nAPI key (Jupyter token): {token}\n"
          f"curl -H 'Authorization: Bearer {token}' {base}/models", flush=True)
    env = {**os.environ, "JUPYTER_TOKEN": token}
    cmd = [sys.executable, "-m", "jupyter_server", f"--ServerApp.ip={args.ip}", f"--ServerApp.port={args.port}",
           "--ServerApp.open_browser=False", "--ServerApp.jpserver_extensions={'bodhi_nb': True}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    return subprocess.call(cmd, env=env)


def cmd_hub_service(args: argparse.Namespace) -> int:
    """The gateway as a JupyterHub service (JupyterHub gives it its settings in the environment);
    the service is its own program (bodhi_nb/http/hub_service.py), run in this process's place."""
    if importlib.util.find_spec("jupyterhub") is None:
        print("error: bodhi-nb hub-service needs JupyterHub: pip install 'bodhi_nb[hub]'", file=sys.stderr)
        return 2
    argv = [f"--BodhiHubAuthorizer.admin_groups={g}" for g in args.admin_group or ["bodhi-admins"]]
    argv += [f"--BodhiExtension.allowed_addresses={a}" for a in args.allow or []]
    if args.home:
        argv.append(f"--BodhiExtension.bodhi_home={args.home}")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--allow-root")
    cmd = [sys.executable, "-m", "bodhi_nb.http.hub_service", *argv, *args.rest]
    os.execv(sys.executable, cmd)
    return 0  # pragma: no cover


def cmd_api_models(args: argparse.Namespace) -> int:
    b = _bodhi(args)
    am = b.api_models
    if args.action == "list":
        _print(am.list(page_size=1000))
    elif args.action == "create":
        key = _read_key(args, required=False)
        _print(am.create(args.id, args.base_url, api_key=key, models=args.models or [], prefix=args.prefix,
                         forward_all_with_prefix=args.forward_all, api_format=args.api_format or "openai"))
    elif args.action == "update":
        changes: dict[str, Any] = {}
        for k in ("base_url", "prefix", "api_format"):
            if getattr(args, k) is not None:
                changes[k] = getattr(args, k)
        if args.models is not None:
            changes["models"] = args.models
        if args.forward_all is not None:
            changes["forward_all_with_prefix"] = args.forward_all
        key = _read_key(args, required=False) if args.set_key else None
        _print(am.update(args.id, api_key=key, **changes))
    elif args.action == "delete":
        am.delete(args.id)
        print(f"deleted {args.id}")
    elif args.action == "test":
        res = am.test(args.model, args.prompt, id=args.id)
        _print(res)
        return 0 if res["success"] else 1
    elif args.action == "fetch-models":
        _print(am.fetch_models(args.id))
    return 0


def _json_object(text: str | None, flag: str) -> dict[str, Any]:
    """A JSON-object option: bad JSON is a one-line 400 naming the option, not a traceback."""
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(f"{flag} is not valid JSON ({exc.msg} at column {exc.colno}).",
                                  param=flag.lstrip("-")) from None
    if not isinstance(value, dict):
        raise InvalidRequestError(f"{flag} must be a JSON object, e.g. {{\"temperature\": 0.2}}.",
                                  param=flag.lstrip("-"))
    return value


def cmd_aliases(args: argparse.Namespace) -> int:
    b = _bodhi(args)
    if args.action == "list":
        _print({"user": b.aliases.list(), "discovered": b.aliases.models()})
    elif args.action == "create":
        _print(b.aliases.create(args.alias, args.repo, args.filename, args.snapshot,
                                request_params=_json_object(args.request_params, "--request-params"),
                                context_params=_json_object(args.context_params, "--context-params")))
    elif args.action == "delete":
        b.aliases.delete(args.alias)
        print(f"deleted {args.alias}")
    return 0


def cmd_router_aliases(args: argparse.Namespace) -> int:
    b = _bodhi(args)
    ra = b.router_aliases
    if args.action == "list":
        _print(ra.list())
    elif args.action == "create":
        _print(ra.create(args.alias, args.targets, cooldown_seconds=args.cooldown_seconds,
                         max_attempts=args.max_attempts, honor_retry_after=args.honor_retry_after))
    elif args.action == "delete":
        ra.delete(args.alias)
        print(f"deleted {args.alias}")
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    b = _bodhi(args)
    cands = b.explain(args.model)
    if not cands:
        print(f"'{args.model}': no API model, user alias or local model serves this name.")
        return 1
    for c in cands:
        mark = "->" if c.won else "  "
        up = f" (upstream '{c.upstream_model}')" if c.upstream_model else ""
        print(f"{mark} {c.source}:{c.name} [{c.rule}]{up}: {c.reason}")
        for t in c.targets:  # a router alias's targets, in the order they are tried
            when = f" until {t.cooling_until:%Y-%m-%d %H:%M:%S} UTC" if t.cooling_until else ""
            print(f"     {t.name}: {t.state}{when}" + (f" ({t.served_by})" if t.served_by else ""))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from .server_core.model_router import Local

    b = _bodhi(args)
    if isinstance(b.route(args.model), Local) and not (b.run(b.ops.engine.status()) or {}).get("alive"):
        print(f"Starting the local engine for {args.model} ...", file=sys.stderr, flush=True)
    try:
        for text in b.chat(args.model, args.text, stream=True, max_tokens=args.max_tokens):
            print(text, end="", flush=True)
        print()
    finally:
        b.run(b.ops.engine.stop(only_if_owner=True))  # a one-shot command leaves no engine behind
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    try:
        res = _bodhi(args).aliases.pull(args.ref, revision=args.revision, show=not args.quiet)
    except KeyboardInterrupt:
        print("\nPull interrupted; run the same command again to resume where it stopped.", file=sys.stderr)
        return 130
    print(f"Pulled {res['repo']}/{res['filename']}; chat with it as: {res['model']}")
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    b = _bodhi(args)
    if args.rows:
        frame = b.usage(since=args.since, until=args.until, limit=args.rows)
        frame = frame[["time", "surface", "model", "provider", "status", "prompt_tokens", "completion_tokens",
                       "cost_usd", "latency_ms"]]
    else:
        frame = b.usage(since=args.since, until=args.until, by=args.by)
    print(frame.to_string(index=False, na_rep="-", float_format=lambda x: f"{x:.4f}") if len(frame)
          else "No usage recorded" + (" in this period." if args.since or args.until else " yet."))
    state = b.budget()
    if state["daily_usd"] is not None:
        print(f"\nBudget today (UTC): ${state['spent_today_usd']:.4f} of ${state['daily_usd']:.2f}"
              + (" - exceeded, priced models answer 429" if state["exceeded"] else ""))
    return 0


def cmd_rotate_key(args: argparse.Namespace) -> int:
    def announce(value: str) -> None:  # an env secret: only the user can store the new one
        print(f"New master secret (set BODHI_ENCRYPTION_KEY to it): {value}", flush=True)

    b = _bodhi(args)
    print(b.run(b.ops.keys.rotate(os.environ.get("BODHI_NEW_ENCRYPTION_KEY") or None, announce=announce)))
    return 0


# -- parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bodhi-nb", description="One gateway to remote and local models in Jupyter.")
    p.add_argument("--home", help="BODHI_HOME (default: $BODHI_HOME or <jupyter data dir>/bodhi_nb)")
    sub = p.add_subparsers(dest="command", required=True)

    lab = sub.add_parser("lab", help="open JupyterLab on the quickstart notebook (other options go to JupyterLab)",
                         add_help=False)
    lab.set_defaults(fn=cmd_lab)

    serve = sub.add_parser("serve", help="run a Jupyter server with only the gateway; prints base URL and token")
    serve.add_argument("--ip", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8890)
    serve.set_defaults(fn=cmd_serve)

    hs = sub.add_parser("hub-service", help="run the gateway as a JupyterHub service: one store of keys for a whole "
                                            "hub (see the README's jupyterhub_config.py)")
    hs.add_argument("--admin-group", action="append",
                    help="JupyterHub group whose members manage API models, aliases, prices and budgets "
                         "(repeatable; default bodhi-admins)")
    hs.add_argument("--allow", action="append",
                    help="a loopback, private, link-local or metadata address API models may reach anyway: CIDR, "
                         "IP[:port] or host name (repeatable)")
    hs.set_defaults(fn=cmd_hub_service)

    am = sub.add_parser("api-models", help="manage remote OpenAI-compatible providers")
    am_sub = am.add_subparsers(dest="action", required=True)
    am_sub.add_parser("list")
    for name in ("create", "update"):
        c = am_sub.add_parser(name)
        c.add_argument("id")
        if name == "create":
            c.add_argument("base_url")
        else:
            c.add_argument("--base-url", dest="base_url")
            c.add_argument("--set-key", action="store_true", help="replace the stored key (prompted or from env)")
        c.add_argument("--models", nargs="*")
        c.add_argument("--prefix")
        c.add_argument("--api-format", dest="api_format", choices=API_FORMATS,
                       help="the provider's wire format (default openai: chat completions)")
        c.add_argument("--forward-all", action=argparse.BooleanOptionalAction, default=None if name == "update" else False)
        c.add_argument("--api-key-env", default="BODHI_API_KEY", help="environment variable holding the key")
        c.add_argument("--no-key", action="store_true", help="the provider needs no key")
    d = am_sub.add_parser("delete")
    d.add_argument("id")
    t = am_sub.add_parser("test")
    t.add_argument("id")
    t.add_argument("model")
    t.add_argument("--prompt", default="Say hello")
    f = am_sub.add_parser("fetch-models")
    f.add_argument("id")
    am.set_defaults(fn=cmd_api_models)

    al = sub.add_parser("aliases", help="manage local user aliases")
    al_sub = al.add_subparsers(dest="action", required=True)
    al_sub.add_parser("list")
    c = al_sub.add_parser("create")
    c.add_argument("alias")
    c.add_argument("repo")
    c.add_argument("filename")
    c.add_argument("--snapshot", default="main")
    c.add_argument("--request-params", help='JSON, e.g. {"temperature": 0.2}')
    c.add_argument("--context-params", help='JSON, e.g. {"n_ctx": 2048}')
    d = al_sub.add_parser("delete")
    d.add_argument("alias")
    al.set_defaults(fn=cmd_aliases)

    ro = sub.add_parser("router-aliases", help="manage router aliases (one name, ordered fallback targets)")
    ro_sub = ro.add_subparsers(dest="action", required=True)
    ro_sub.add_parser("list")
    c = ro_sub.add_parser("create")
    c.add_argument("alias")
    c.add_argument("targets", nargs="+", help="model names, tried in this order")
    c.add_argument("--cooldown-seconds", type=float, help="skip a failed target this long (default 60)")
    c.add_argument("--max-attempts", type=int, help="targets tried per request at most (default: all)")
    c.add_argument("--honor-retry-after", action=argparse.BooleanOptionalAction, default=None,
                   help="cool a target down for the Retry-After it sent (default: yes)")
    d = ro_sub.add_parser("delete")
    d.add_argument("alias")
    ro.set_defaults(fn=cmd_router_aliases)

    r = sub.add_parser("route", help="explain which provider serves a model name")
    r.add_argument("model")
    r.set_defaults(fn=cmd_route)

    ch = sub.add_parser("chat", help="send one message and stream the reply")
    ch.add_argument("model")
    ch.add_argument("text")
    ch.add_argument("--max-tokens", type=int, default=256)
    ch.set_defaults(fn=cmd_chat)

    pl = sub.add_parser("pull", help="download a GGUF from the Hugging Face Hub into its cache, with progress")
    pl.add_argument("ref", help="owner/repo, owner/repo:QUANT (e.g. Q4_K_M) or owner/repo/file.gguf")
    pl.add_argument("--revision", default="main")
    pl.add_argument("--quiet", action="store_true", help="no progress bar")
    pl.set_defaults(fn=cmd_pull)

    us = sub.add_parser("usage", help="print the usage ledger: tokens, cost, requests and errors per model")
    us.add_argument("--by", default="model", help="model, provider, surface, day or notebook (comma-separated)")
    us.add_argument("--since", help="a date, an ISO time or a span such as 24h or 7d")
    us.add_argument("--until", help="same forms as --since")
    us.add_argument("--rows", type=int, metavar="N", help="print the latest N requests instead of sums")
    us.set_defaults(fn=cmd_usage)

    rk = sub.add_parser("rotate-key", help="re-encrypt every stored key under a new master secret")
    rk.set_defaults(fn=cmd_rotate_key)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.command not in ("lab", "hub-service"):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.rest = unknown  # `bodhi-nb lab --port 9000` passes JupyterLab's own options through
    try:
        return int(args.fn(args) or 0)
    except BodhiError as exc:
        # One line, with the same status and code an HTTP client or Python caller gets.
        print(f"error ({exc.status} {exc.code}): {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
