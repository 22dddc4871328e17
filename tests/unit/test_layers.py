"""The layer contract of docs/ARCHITECTURE.md ("Layers"), checked on the source.

objs imports nothing of ours; services only objs; server_core (the contract, the router, the
gateway and the operations) only the floors below; the two wings, notebook and http, reach
the lower floors through server_core alone and never import each other; nothing imports a
circle. Every import counts, including those inside functions and under TYPE_CHECKING.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import bodhi_nb
from tests.resources.import_graph import Edge, cycles, graph

ROOT = Path(bodhi_nb.__file__).parent

# What each floor may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "objs": set(),
    "services": {"objs"},
    "server_core": {"objs", "services"},
    "notebook": {"objs", "server_core"},
    "http": {"objs", "server_core"},
    "cli": {"objs", "server_core", "notebook"},
    "root": {"notebook", "http"},
}


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or module == "bodhi_nb.extension":  # the package and the server extension's entry point
        return "root"
    if parts[1] in ALLOWED:
        return parts[1]
    raise AssertionError(f"{module} is on no floor: put it in objs, services, server_core, notebook or http")


def violations(edges: list[Edge]) -> list[str]:
    out = []
    for e in edges:
        src, dst = layer(e.source), layer(e.target)
        if src != dst and dst not in ALLOWED[src]:
            out.append(f"{e.source}:{e.line} imports {e.target} ({src} may import {sorted(ALLOWED[src]) or 'nothing'})")
    return out


def test_every_module_is_on_a_floor() -> None:
    for e in graph(ROOT):
        layer(e.source)
        layer(e.target)


def test_imports_only_go_down_and_the_wings_stay_apart() -> None:
    assert violations(graph(ROOT)) == []


def private_violations(edges: list[Edge]) -> list[str]:
    """A private module (`_name`) is imported only from inside the package that holds it."""
    out = []
    for e in edges:
        parts = e.target.split(".")
        private = [i for i, p in enumerate(parts) if p.startswith("_")]
        if not private:
            continue
        home = ".".join(parts[: private[-1]])
        if e.source != home and not e.source.startswith(home + "."):
            out.append(f"{e.source}:{e.line} imports the private {e.target} from outside {home}")
    return out


def test_private_modules_stay_in_their_package() -> None:
    assert private_violations(graph(ROOT)) == []


def test_a_private_import_from_outside_is_caught() -> None:
    assert private_violations([Edge("bodhi_nb.http.extension", "bodhi_nb.services.db._encryption", 1)]) != []
    assert private_violations([Edge("bodhi_nb.services.db.store", "bodhi_nb.services.db._encryption", 1)]) == []


def test_no_import_circles() -> None:
    assert cycles(graph(ROOT)) == []


@pytest.mark.parametrize(("source", "target"), [
    ("bodhi_nb.objs.alias", "bodhi_nb.services.home"),            # objs imports nothing of ours
    ("bodhi_nb.services.cache", "bodhi_nb.server_core.gateway"),  # services only objs
    ("bodhi_nb.server_core.gateway", "bodhi_nb.notebook.client"),  # nothing below imports a wing
    ("bodhi_nb.notebook.client", "bodhi_nb.http.extension"),      # the wings stay apart
    ("bodhi_nb.http.chat", "bodhi_nb.services.upstream_client"),  # a wing goes through server_core
])
def test_a_forbidden_import_is_caught(source: str, target: str) -> None:
    """The check is not vacuous: one added forbidden edge is reported."""
    assert violations([Edge(source, target, 1)]) != []


def test_a_circle_is_caught() -> None:
    edges = [Edge("bodhi_nb.services.a", "bodhi_nb.services.b", 1), Edge("bodhi_nb.services.b", "bodhi_nb.services.a", 1)]
    assert cycles(edges) == [["bodhi_nb.services.a", "bodhi_nb.services.b"]]


def test_a_function_level_import_counts(tmp_path: Path) -> None:
    pkg = tmp_path / "bodhi_nb"
    (pkg / "objs").mkdir(parents=True)
    (pkg / "services").mkdir()
    for p in (pkg, pkg / "objs", pkg / "services"):
        (p / "__init__.py").write_text("")
    (pkg / "services" / "x.py").write_text("")
    (pkg / "objs" / "y.py").write_text("def f():\n    from ..services import x\n    return x\n")
    assert violations(graph(pkg)) == ["bodhi_nb.objs.y:2 imports bodhi_nb.services.x (objs may import nothing)"]
