"""Dependencies point one way: shared ← agent, shared ← coordinator, never across.

The agent is installed on every host of a fleet, so it must not pull in the
coordinator's web framework or database drivers either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "shared": ("certfleet.agent", "certfleet.coordinator", "quart", "quart_trio", "hypercorn", "psycopg",
               "psycopg_pool", "sqlite_utils", "httpx", "trio"),
    "agent": ("certfleet.coordinator", "quart", "quart_trio", "hypercorn", "psycopg", "psycopg_pool"),
    "coordinator": ("certfleet.agent", "sqlite_utils"),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("distribution", sorted(FORBIDDEN))
def test_distribution_imports_only_allowed_packages(distribution):
    sources = sorted((ROOT / distribution / "src").rglob("*.py"))
    assert sources, f"no sources found for {distribution}"
    violations = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sources
        for line, module in _imports(path)
        if any(module == banned or module.startswith(banned + ".") for banned in FORBIDDEN[distribution])
    ]
    assert violations == []


def test_the_checker_sees_a_crossing_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from certfleet.coordinator import service\n")
    assert (2, "certfleet.coordinator") in _imports(bad)


def test_certfleet_is_a_namespace_package():
    for distribution in FORBIDDEN:
        assert not (ROOT / distribution / "src" / "certfleet" / "__init__.py").exists()
