"""Which code runs in process A (`ggdefender run`, may be root) and which in process B (`ggdefender part collector`,
unprivileged) shows in the folders (docs/architecture.md, "Code layout"): each process has its own packages, the
top-level modules are what both share, and the two sides import nothing of each other but the few pure rules
listed below. Nothing that ships imports the developer tools the device artifact leaves out."""

import ast
import re
from pathlib import Path

import ggdefender

PACKAGE = Path(ggdefender.__file__).parent
ARCHITECTURE = PACKAGE.parents[1] / "docs" / "architecture.md"
PROCESS_A = ("supervisor", "remediation")
PROCESS_B = ("collector", "plugins", "detect")
NOT_SHIPPED = ("local", "devtools", "fleet")  # = build.EXCLUDED_DIRS (tests/unit/test_cli_parts.py keeps those equal)
# every top-level module, each used by both processes (or by the `ggdefender` command before either starts)
SHARED = ("__main__", "cli", "config_store", "declarations", "defaults", "eventstream", "eventstream_rpc",
          "greengrasssdk", "health", "ipc", "ipc_awsiotsdk", "ipc_client", "ipc_port", "ipc_pure", "jobs_protocol",
          "part", "process_start", "ratelog", "relay_wire", "settings", "statefile", "topics")

# What one side imports of the other: only pure modules, for a rule that side must apply exactly as the other
# does. (importing file, imported module); every entry must still be in use (see the last test).
ALLOWED = {
    # A's relay guard checks what B publishes by B's own rules: violation states, metric names and value kinds,
    # and a report's long metric names
    ("supervisor/relay_guard.py", "ggdefender.detect.violations"),
    ("supervisor/relay_guard.py", "ggdefender.plugins.contract"),
    ("supervisor/relay_guard.py", "ggdefender.collector.report"),
    # A's MitigationGate judges B's requests by Detect's request shape, and re-reads /proc the collector's way
    ("remediation/mitigation_gate.py", "ggdefender.detect.mitigation"),
    ("remediation/mitigation_gate.py", "ggdefender.collector.sources.procfs"),
    ("remediation/mitigation_gate.py", "ggdefender.collector.sources.data"),
    # the socket-owners operation reads /proc's socket tables with the collector's parser
    ("remediation/operations/socket_owners.py", "ggdefender.collector.sources.procfs"),
    # A's relay policy lets B publish exactly the Collector.Export topic A itself reads, by the collector's parser
    ("supervisor/relay_server.py", "ggdefender.collector.export"),
    # a set-config job is validated by the parser of the section it changes, as the part itself would
    ("remediation/operations/set_config.py", "ggdefender.collector.config"),
    ("remediation/operations/set_config.py", "ggdefender.detect.config"),
    ("remediation/operations/set_config.py", "ggdefender.plugins.host"),
    ("remediation/operations/set_config.py", "ggdefender.plugins.builtin"),
    ("remediation/operations/set_config.py", "ggdefender.plugins.registry"),
    # Detect may ask only for the mitigations the remediation part runs, with its request id rule
    ("detect/mitigation.py", "ggdefender.remediation.config"),
    # `detect replay --plot`: reached only after cli.import_part found the developer tools (NotInstalled otherwise)
    ("detect/cli.py", "ggdefender.devtools.plot"),
}


def _is_module(dotted: str) -> bool:
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path) -> set:
    """Every ggdefender module `path` imports, at any depth (in functions, under TYPE_CHECKING too), relative
    imports resolved; `from package import module` names the module."""
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    package = rel.parts[:-1]  # a module's own package; for __init__.py, the package itself
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[:len(package) - node.level + 1]
                base = ".".join(parent + ((node.module,) if node.module else ()))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if _is_module(f"{base}.{alias.name}") else base)
    return {m for m in found if m == "ggdefender" or m.startswith("ggdefender.")}


def _side(module: str) -> str:
    top = module.split(".")[1] if "." in module else ""
    if top in PROCESS_A:
        return "A"
    if top in PROCESS_B:
        return "B"
    if top in NOT_SHIPPED:
        return "not shipped"
    return "shared"


def _files(side: str) -> dict:
    """{path relative to the package: file} of one side's code."""
    if side == "shared":
        paths = [p for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    else:
        paths = [p for top in (PROCESS_A if side == "A" else PROCESS_B) for p in (PACKAGE / top).rglob("*.py")]
    return {str(p.relative_to(PACKAGE)): p for p in sorted(paths)}


def _wrong_imports(side: str, forbidden: set) -> dict:
    wrong = {}
    for name, path in _files(side).items():
        bad = sorted(m for m in _imports(path) if _side(m) in forbidden and (name, m) not in ALLOWED)
        if bad:
            wrong[name] = bad
    return wrong


def test_process_a_imports_nothing_of_process_b_but_the_listed_rules():
    assert _wrong_imports("A", {"B", "not shipped"}) == {}


def test_process_b_imports_nothing_of_process_a_but_the_listed_rules():
    assert _wrong_imports("B", {"A", "not shipped"}) == {}


def test_every_top_level_module_is_shared_and_imports_neither_process():
    top = sorted(p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert top == sorted(SHARED), "a top-level module is code both processes use: list it in SHARED, or move it " \
                                  f"into its process's package ({PROCESS_A} for A, {PROCESS_B} for B)"
    # cli.py names the subcommand modules as strings (imported lazily, one per command): not an import here
    assert _wrong_imports("shared", {"A", "B", "not shipped"}) == {}


def test_every_allowed_exception_is_still_needed():
    """An allow-list entry nobody uses any more is a door left open: remove it."""
    used = {(name, m) for side in ("A", "B") for name, path in _files(side).items() for m in _imports(path)}
    assert sorted(ALLOWED - used) == []


def test_the_architecture_doc_says_which_folder_is_which_process():
    text = ARCHITECTURE.read_text()
    tree = text[text.index("## Code layout"):]
    tree = tree[:tree.index("```", tree.index("```") + 3)]
    for top, process in [(t, "process A") for t in PROCESS_A] + [(t, "process B") for t in PROCESS_B]:
        line = re.search(rf"^  {top}/ .*$", tree, re.M)
        assert line and process in line.group(0), f"docs/architecture.md's code layout: {top}/ is {process}"


def test_the_layout_check_sees_a_violation(tmp_path, monkeypatch):
    """The checks above can fail: a module of A that imports B's collector service is reported."""
    probe = PACKAGE / "supervisor" / "_layout_probe.py"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: (
        "from ggdefender.collector import service\nfrom ..plugins import host\n" if self == probe
        else _read_text(self, *a, **k)))
    monkeypatch.setattr(Path, "rglob", lambda self, pattern: (
        list(_rglob(self, pattern)) + ([probe] if self == PACKAGE / "supervisor" else [])))
    assert _wrong_imports("A", {"B"}) == {"supervisor/_layout_probe.py": ["ggdefender.collector.service",
                                                                         "ggdefender.plugins.host"]}


_read_text, _rglob = Path.read_text, Path.rglob
