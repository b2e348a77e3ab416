"""The IPC port is declared once (ggdefender/ipc_port.py) and checked: mypy (configured in pyproject.toml,
[tool.mypy]) runs over the component's code and the tests' fake of the port. It proves that process A's `Ipc`,
process B's `RelayClient` and the tests' `FakeIpc` implement the port, and, because every part holds its IPC
handle typed as a port (checked here too), that every call a part makes on it is a method the port declares."""

import ast
import re
import subprocess
import sys
import typing
from pathlib import Path

import real_counterparts
from ggdefender import ipc_port

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "components" / "ggdefender"
# the whole component and the tests' fake of the port; left out: two build-time developer tools (they do not
# ship) whose functions are not all annotated yet
CHECKED = ["components/ggdefender", "tests/fake_ipc.py"]
NOT_CHECKED = r"^components/ggdefender/devtools/(build|wheels)\.py$"
PORTS = (ipc_port.IpcPort, ipc_port.SupervisorPort, ipc_port.CollectorPort)
PORT_NAMES = {port.__name__ for port in PORTS}


def mypy(*args: str) -> subprocess.CompletedProcess:
    try:
        import mypy  # noqa: F401
    except ImportError:
        real_counterparts.unavailable("mypy", "pip install -e '.[dev]' (pins mypy) in the project's venv")
    # no cache in the clone: each run checks from scratch (a few seconds)
    return subprocess.run([sys.executable, "-m", "mypy", "--cache-dir=/dev/null", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_the_component_the_port_its_implementations_and_the_fake_type_check():
    out = mypy("--exclude", NOT_CHECKED, *CHECKED)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ipc_port.py" not in NOT_CHECKED and "Success: no issues found" in out.stdout, out.stdout


def test_the_check_fails_for_a_part_calling_what_its_port_does_not_declare(tmp_path):
    part = tmp_path / "b_part.py"
    part.write_text("from ggdefender.ipc_port import CollectorPort\n\n\n"
                    "def restart_everything(ipc: CollectorPort) -> None:\n"
                    "    ipc.restart_component('aws.greengrass.Nucleus')  # process A only: not B's to call\n\n\n"
                    "class Part:\n"
                    "    def __init__(self, ipc: CollectorPort) -> None:\n"
                    "        self.ipc = ipc\n\n"
                    "    def unannotated(self):  # its body is checked all the same (check_untyped_defs)\n"
                    "        self.ipc.update_config(['Collector'], {})\n")
    out = mypy(str(part))
    assert out.returncode == 1, out.stdout + out.stderr
    for line, method in ((5, "restart_component"), (13, "update_config")):
        assert f'b_part.py:{line}: error: "CollectorPort" has no attribute "{method}"' in out.stdout, out.stdout


def test_the_check_fails_for_an_implementation_that_misses_a_method(tmp_path):
    half = tmp_path / "half_port.py"
    half.write_text("from ggdefender.ipc_port import IpcPort\n\n\n"
                    "class Half:\n"
                    "    thing_name = 'x'\n\n"
                    "    def publish_local(self, topic: str, message: object) -> None: ...\n\n\n"
                    "_port: IpcPort = Half()\n")
    out = mypy(str(half))
    assert out.returncode == 1 and 'variable has type "IpcPort"' in out.stdout, out.stdout + out.stderr


def declared() -> set:
    names = set()
    for port in PORTS:
        names |= {n for n in [*vars(port), *port.__annotations__] if not n.startswith("_")}
    return names


def test_every_port_method_is_implemented_by_its_process():
    from fake_ipc import FakeIpc
    from ggdefender.ipc import Ipc
    from ggdefender.collector.relay_client import RelayClient

    def members(port):  # methods and properties; data attributes are instance state, checked by mypy
        return {n for cls in port.__mro__ if cls not in (typing.Protocol, typing.Generic, object)
                for n in vars(cls) if not n.startswith("_")}

    for impl, port in ((Ipc, ipc_port.SupervisorPort), (RelayClient, ipc_port.CollectorPort),
                       (FakeIpc, ipc_port.SupervisorPort), (FakeIpc, ipc_port.CollectorPort)):
        missing = sorted(n for n in members(port) if not hasattr(impl, n))
        assert not missing, f"{impl.__name__} lacks {missing} of {port.__name__}"


HANDLE_NAMES = {"ipc", "_ipc"}  # how every part names its IPC handle: ipc, self.ipc, ctx.ipc, self._ipc


def untyped_handles(tree: ast.AST) -> list:
    """Parameters and declared fields named as an IPC handle whose annotation names no port: mypy would take
    any call on them."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for arg in node.args.posonlyargs + node.args.args + node.args.kwonlyargs:
                if arg.arg in HANDLE_NAMES and not _names_a_port(arg.annotation):
                    found.append(f"{node.name}({arg.arg}) line {arg.lineno}")
        elif isinstance(node, ast.AnnAssign):
            name = node.target.id if isinstance(node.target, ast.Name) else \
                node.target.attr if isinstance(node.target, ast.Attribute) else None
            if name in HANDLE_NAMES and not _names_a_port(node.annotation):
                found.append(f"{name} line {node.lineno}")
    return found


def _names_a_port(annotation) -> bool:
    if annotation is None:
        return False
    text = annotation.value if isinstance(annotation, ast.Constant) else ast.unparse(annotation)
    return bool(PORT_NAMES & set(re.findall(r"\w+", str(text))))


def test_every_part_holds_its_ipc_handle_typed_as_a_port():
    untyped = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "ipc.py" or (PACKAGE / "local") in path.parents:  # Ipc itself; the core
            continue
        found = untyped_handles(ast.parse(path.read_text(), str(path)))
        if found:
            untyped[str(path.relative_to(ROOT))] = found
    assert untyped == {}, f"IPC handles not typed as an ipc_port port (mypy cannot check calls on them): {untyped}"


def test_the_handle_scan_finds_untyped_handles():
    tree = ast.parse("def a(ipc): ...\ndef b(self, ipc: 'IpcPort'): ...\ndef c(ipc: Optional[SupervisorPort]): ...\n"
                     "def d(*, ipc=None): ...\nclass C:\n    ipc: Any = None\n    _ipc: CollectorPort\n"
                     "def e(x):\n    x.ipc: object = 1\n")
    assert untyped_handles(tree) == ["a(ipc) line 1", "d(ipc) line 4", "ipc line 6", "ipc line 9"]


def ipc_calls(tree: ast.AST) -> set:
    """Names of methods called (or looked up with getattr) on an IPC handle in one module."""
    found = set()

    def is_handle(node: ast.AST) -> bool:
        return (isinstance(node, ast.Name) and node.id in HANDLE_NAMES) or \
            (isinstance(node, ast.Attribute) and node.attr in HANDLE_NAMES)

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and is_handle(node.func.value):
            found.add(node.func.attr)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr") \
                and len(node.args) >= 2 and is_handle(node.args[0]) and isinstance(node.args[1], ast.Constant):
            found.add(node.args[1].value)
    return found


def test_every_call_the_parts_make_on_their_ipc_handle_is_declared_in_the_port():
    own = {PACKAGE / "ipc.py", PACKAGE / "ipc_port.py", PACKAGE / "relay_wire.py",
           PACKAGE / "supervisor" / "relay_server.py", PACKAGE / "collector" / "relay_client.py"}
    undeclared = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path in own or (PACKAGE / "local") in path.parents:  # local/ is the core, not a part
            continue
        extra = ipc_calls(ast.parse(path.read_text(), str(path))) - declared()
        if extra:
            undeclared[str(path.relative_to(ROOT))] = sorted(extra)
    assert undeclared == {}, f"calls on the IPC handle that ggdefender/ipc_port.py does not declare: {undeclared}"


def test_the_scan_finds_calls_in_every_form():
    tree = ast.parse("self.ipc.publish_iot(t, p)\nctx.ipc.collect_now(r, 1)\nipc.get_config()\n"
                     "getattr(self.ipc, 'mitigate', None)\nself._ipc.health(p, v)\nother.close()\n")
    assert ipc_calls(tree) == {"publish_iot", "collect_now", "get_config", "mitigate", "health"}

