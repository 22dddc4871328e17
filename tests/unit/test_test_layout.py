"""The tests' own layout: no module under tests/ imports a test module.

A helper or fixture that two test modules need lives in tests/resources/ (plain helpers) or
in the nearest conftest.py (fixtures). Importing `tests.integration.test_x` from another
module ties that module to test_x's collection, its module-level setup and its fixtures,
and hides the helper where nobody looks for shared code (issue #19).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]


def _is_test_module(dotted: str) -> bool:
    return dotted.rsplit(".", 1)[-1].startswith("test_")


def imported_test_modules(source: str) -> list[str]:
    """What `source` imports that is a test module: `import a.test_b`, `from a.test_b import c`,
    `from .test_b import c`, `from tests.a import test_b`, `from . import test_b` and
    `importlib.import_module("a.test_b")`, each as `line: dotted name` (relative ones keep
    their leading dots)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: {a.name}" for a in node.names if _is_test_module(a.name)]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            if node.module and _is_test_module(node.module):
                found.append(f"{node.lineno}: {module}")
            elif node.level or (node.module or "").split(".")[0] == "tests":
                # a name imported from a package of the tests: a test module (or a test function)
                sep = "" if module.endswith(".") else "."
                found += [f"{node.lineno}: {module}{sep}{a.name}" for a in node.names if a.name.startswith("test_")]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str) and _is_test_module(node.args[0].value)
              and ast.unparse(node.func) in ("importlib.import_module", "import_module", "__import__")):
            found.append(f"{node.lineno}: {node.args[0].value}")
    return found


def _modules() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_module_under_tests_imports_a_test_module():
    modules = _modules()
    # the walk really sees the tests (a wrong root would pass vacuously)
    assert {"test_cli.py", "test_layers.py", "test_test_layout.py", "conftest.py"} <= {p.name for p in modules}
    offenders = {str(p.relative_to(TESTS.parent)): hits for p in modules
                 if (hits := imported_test_modules(p.read_text(encoding="utf-8")))}
    assert offenders == {}, ("move what these import into tests/resources/ (helpers) or a conftest.py "
                             f"(fixtures): {offenders}")


@pytest.mark.parametrize(("source", "reported"), [
    ("from tests.integration.test_cli import cli\n", ["1: tests.integration.test_cli"]),
    ("import os\n\ndef f():\n    from .test_schemathesis import run\n", ["4: .test_schemathesis"]),
    ("from ..integration.test_x import helper\n", ["1: ..integration.test_x"]),
    ("from . import test_engine_hygiene\n", ["1: .test_engine_hygiene"]),
    ("from tests.integration import helpers, test_pull\n", ["1: tests.integration.test_pull"]),
    ("import tests.unit.test_layers as layers\n", ["1: tests.unit.test_layers"]),
    ("import importlib\nm = importlib.import_module('tests.integration.test_cli')\n", ["2: tests.integration.test_cli"]),
])
def test_an_import_of_a_test_module_is_reported(source, reported):
    assert imported_test_modules(source) == reported


def test_imports_of_helpers_conftest_and_the_package_are_not_reported():
    source = ("import pytest\nfrom tests.conftest import TEST_KEY\nfrom tests.resources.servers import wait_for\n"
              "from tests.route_table import every_route\nfrom .conftest import BASE\n"
              "from bodhi_nb.notebook.client import Bodhi\nfrom bodhi_nb.x import test_connection\n"
              "from tests.resources import fake_openai\n")
    assert imported_test_modules(source) == []
