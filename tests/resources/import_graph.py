"""The import graph of a package, read from its source with `ast` (nothing is imported).

Every import counts: module level, inside functions, and under `if TYPE_CHECKING:`, since each
of them is a dependency a reader must follow. Used by tests/unit/test_layers.py.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int


def modules(root: Path) -> dict[str, Path]:
    """`bodhi_nb.x.y` -> its file, for every module and package under `root` (the package dir)."""
    out: dict[str, Path] = {}
    for p in sorted(root.rglob("*.py")):
        parts = list(p.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _owner(name: str, known: dict[str, Path]) -> str | None:
    """The module `name` lives in: itself, or the longest known prefix (a name inside a module)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def edges_of(module: str, path: Path, known: dict[str, Path], top: str) -> list[Edge]:
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    out: list[Edge] = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                head = ".".join(base + ([node.module] if node.module else []))
            else:
                head = node.module or ""
            # `from pkg import mod` depends on pkg.mod when that is a module, else on pkg.
            targets = [f"{head}.{a.name}" if f"{head}.{a.name}" in known else head for a in node.names]
        for t in targets:
            if t.split(".")[0] != top:
                continue
            owner = _owner(t, known)
            if owner is not None and owner != module:
                out.append(Edge(module, owner, node.lineno))
    return out


def graph(root: Path) -> list[Edge]:
    known = modules(root)
    return [e for m, p in known.items() for e in edges_of(m, p, known, root.name)]


def cycles(edges: Iterable[Edge]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    adj: dict[str, set[str]] = {}
    for e in edges:
        adj.setdefault(e.source, set()).add(e.target)
        adj.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(adj):
        if start in index:
            continue
        work = [(start, iter(sorted(adj[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(adj[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                group = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    group.append(x)
                    if x == v:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found
