"""`local/` is three systems, one sub-package each (docs/architecture.md, "The local core"): the nucleus emulation,
the offline AWS services and the user interface. The folders only show that if the imports keep to it and the
docs name every module where it is."""

import ast
import re
from pathlib import Path

import ggdefender.local

LOCAL = Path(ggdefender.local.__file__).parent
SUBPACKAGES = ("nucleus", "cloud", "ui")
ARCHITECTURE = Path(__file__).resolve().parents[3] / "docs" / "architecture.md"
# the one module that assembles all three systems on one loop (as `local run` and the harness both need it)
ASSEMBLY = "nucleus/runtime.py"


def _modules():
    """Every module of the three sub-packages, nested packages included ("nucleus/ipc_operations/base.py")."""
    return {p.relative_to(LOCAL).as_posix(): p for sub in SUBPACKAGES for p in sorted((LOCAL / sub).rglob("*.py"))
            if p.name != "__init__.py"}


def _local_imports(path: Path) -> set[str]:
    """The sub-packages of local/ that `path` imports from (relative or absolute imports, at any depth)."""
    own = path.relative_to(LOCAL).parts[0]
    depth = len(path.relative_to(LOCAL).parts) - 1  # 1 for nucleus/core.py, 2 for nucleus/ipc_operations/base.py
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if 1 <= node.level <= depth:
            found.add(own)
        elif node.level == depth + 1 and node.module:
            found.add(node.module.split(".")[0])
        elif node.level == 0 and node.module and node.module.startswith("ggdefender.local."):
            found.add(node.module.split(".")[2])
    return found


def test_local_holds_only_its_three_subpackages():
    loose = sorted(p.name for p in LOCAL.glob("*.py") if p.name != "__init__.py")
    assert loose == [], f"modules directly in local/ (put each in one of {SUBPACKAGES}): {loose}"
    assert all((LOCAL / sub / "__init__.py").is_file() for sub in SUBPACKAGES)


def test_the_nucleus_and_the_cloud_services_do_not_reach_into_the_user_interface():
    wrong = {}
    for name, path in _modules().items():
        allowed = {"nucleus": {"nucleus"}, "cloud": {"cloud", "nucleus"}, "ui": set(SUBPACKAGES)}[name.split("/")[0]]
        if name == ASSEMBLY:
            allowed = set(SUBPACKAGES)
        extra = _local_imports(path) - allowed
        if extra:
            wrong[name] = sorted(extra)
    assert wrong == {}


def test_the_architecture_doc_lists_every_module_under_its_subpackage():
    text = ARCHITECTURE.read_text()
    section = text[text.index("## The local core"):]
    bullets = {sub: re.search(rf"^- `local/{sub}/` (.*?)(?=^- |^\n)", section, re.M | re.S) for sub in SUBPACKAGES}
    assert all(bullets.values()), "docs/architecture.md has a bullet per local/ sub-package"
    for name in _modules():
        sub, *folders, module = name.split("/")
        # a nested package is listed as its folder (its modules are one per operation, found by its registry)
        listed = f"`{folders[0]}/`" if folders else f"`{module}`"
        assert listed in bullets[sub].group(1), f"docs/architecture.md does not list {name} under local/{sub}/"


SHIPPED_PROTOCOL = ("ggdefender.eventstream", "ggdefender.eventstream_rpc")  # the pure IPC client needs them too


def test_the_nucleus_speaks_the_protocol_through_the_shipped_codec_and_it_needs_nothing_from_local():
    # the codec and the RPC layer live once, in the artifact (the pure-Python IPC client uses them); the local
    # nucleus imports them from there, and they import nothing from local/ (which the artifact leaves out)
    package = LOCAL.parent
    for module in SHIPPED_PROTOCOL:
        path = package / (module.split(".")[-1] + ".py")
        assert path.is_file(), f"{module} is not in the shipped package"
        assert not any(m.startswith("ggdefender.local") for m in _absolute_imports(path)), module
    assert not (LOCAL / "nucleus" / "eventstream.py").exists(), "the codec lives once, in ggdefender/"
    assert "ggdefender.eventstream" in _absolute_imports(LOCAL / "nucleus" / "rpc.py")
    assert "ggdefender.eventstream_rpc" in _absolute_imports(LOCAL / "nucleus" / "rpc.py")


def _absolute_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found
