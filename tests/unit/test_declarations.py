"""ggdefender.declarations: the one registration style (a module declares `DECLARATION`; the registry lists
its package)."""

from __future__ import annotations

import sys
import types

import pytest

from ggdefender import declarations


@pytest.fixture
def package(tmp_path):
    """A throwaway package `decl_pkg` in tmp_path, removed from sys.modules afterwards."""
    root = tmp_path / "decl_pkg"
    root.mkdir()
    (root / "__init__.py").write_text("")
    sys.path.insert(0, str(tmp_path))
    try:
        yield root
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == "decl_pkg" or n.startswith("decl_pkg.")]:
            del sys.modules[name]


def _declare(root, module, name):
    (root / f"{module}.py").write_text(
        f"import types\nDECLARATION = types.SimpleNamespace(name={name!r})\n")


def _import(root):
    import importlib
    return importlib.import_module(root.name)


def test_modules_are_collected_in_module_name_order_and_helpers_are_skipped(package):
    _declare(package, "zeta", "first-by-name")
    _declare(package, "alpha", "z-name")
    (package / "helper.py").write_text("VALUE = 1\n")  # no DECLARATION: a helper, not an entry
    found = declarations.collect(_import(package))
    assert [(m.__name__, d.name) for m, d in found] == [("decl_pkg.alpha", "z-name"), ("decl_pkg.zeta", "first-by-name")]


def test_a_name_declared_twice_is_an_error_naming_both_modules(package):
    _declare(package, "one", "same")
    _declare(package, "two", "same")
    with pytest.raises(declarations.DeclarationError) as err:
        declarations.collect(_import(package))
    assert str(err.value) == "decl_pkg: 'same' is declared twice, by decl_pkg.one and decl_pkg.two"


def test_a_module_that_fails_to_import_is_an_error_not_silence(package):
    (package / "broken.py").write_text("import ggdefender_no_such_module\n")
    with pytest.raises(ModuleNotFoundError):
        declarations.collect(_import(package))


def test_the_key_can_be_chosen(package):
    (package / "a.py").write_text("import types\nDECLARATION = types.SimpleNamespace(op='x')\n")
    found = declarations.collect(_import(package), name=lambda d: d.op)
    assert [d.op for _, d in found] == ["x"]
    assert isinstance(found[0][0], types.ModuleType)


def test_an_order_sorts_the_entries_and_an_order_declared_twice_is_an_error(package):
    for module, name, rank in (("a", "late", 2), ("b", "early", 1)):
        (package / f"{module}.py").write_text(
            f"import types\nDECLARATION = types.SimpleNamespace(name={name!r}, rank={rank})\n")
    found = declarations.collect(_import(package), order=lambda d: d.rank)
    assert [d.name for _, d in found] == ["early", "late"]
    (package / "c.py").write_text("import types\nDECLARATION = types.SimpleNamespace(name='other', rank=1)\n")
    with pytest.raises(declarations.DeclarationError) as err:
        declarations.collect(_import(package), order=lambda d: d.rank)
    assert str(err.value) == "decl_pkg: order 1 is declared twice, by decl_pkg.b and decl_pkg.c"
