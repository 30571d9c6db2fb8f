"""Every name a certfleet.shared module exports in ``__all__`` exists."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import certfleet.shared

MODULES = ["certfleet.shared"] + [
    f"certfleet.shared.{info.name}" for info in pkgutil.iter_modules(certfleet.shared.__path__)
]


def _declared_all(name: str) -> list[str] | None:
    """``__all__`` as the module declares it.

    An editable install made before the package had an ``__init__.py`` imports
    ``certfleet.shared`` as a namespace package, which never runs that file; read
    the declaration from the source then.
    """
    module = importlib.import_module(name)
    if hasattr(module, "__all__"):
        return list(module.__all__)
    for directory in getattr(module, "__path__", []):
        init = Path(directory) / "__init__.py"
        if init.is_file():
            for node in ast.parse(init.read_text()).body:
                if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
                    return list(ast.literal_eval(node.value))
    return None


def test_every_shared_module_is_listed_in_the_package_all():
    submodules = {name.rpartition(".")[2] for name in MODULES[1:]}
    assert submodules == set(_declared_all("certfleet.shared") or [])


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist_and_are_unique(name):
    exported = _declared_all(name)
    if exported is None:
        pytest.skip(f"{name} has no __all__")
    assert all(isinstance(member, str) for member in exported)
    assert len(exported) == len(set(exported)), "duplicates in __all__"
    module = importlib.import_module(name)
    missing = [member for member in exported
               if not hasattr(module, member) and importlib.util.find_spec(f"{name}.{member}") is None]
    assert missing == []


@pytest.mark.parametrize("name", MODULES[1:])
def test_star_import_gives_every_exported_name(name):
    namespace: dict = {}
    exec(f"from {name} import *", namespace)  # the point of the test
    assert set(_declared_all(name) or []) <= set(namespace)
