"""The layers import downwards only, so the imports never go in a circle: infra (the bottom) imports no app of the
project, the apps import neither the top (mailservice: settings, urls, the Celery app) nor an app above them."""

import ast
from pathlib import Path

import pytest

from tests.processes import ROOT

# Each package and the project's packages it must not import.
MUST_NOT_IMPORT = {
    "infra": {"mailservice", "emails", "providers", "dashboard", "launcher"},
    "providers": {"mailservice", "emails", "dashboard", "launcher"},
    "emails": {"mailservice", "dashboard", "launcher"},
    "dashboard": {"mailservice", "launcher"},
}


def imported_packages(path: Path) -> set[str]:
    """The top-level packages a module imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.partition(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(MUST_NOT_IMPORT))
def test_a_package_imports_no_layer_above_it(package):
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & MUST_NOT_IMPORT[package])
        for path in sorted((ROOT / package).rglob("*.py"))
        if "migrations" not in path.parts
    }
    assert not {module: names for module, names in wrong.items() if names}


def test_the_checker_sees_an_import_inside_a_function(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from emails.models import Email\n    import mailservice.celery\n")
    assert imported_packages(module) == {"os", "emails", "mailservice"}
