"""The IPC port is declared once (ggdefender/ipc_port.py) and checked: mypy (configured in pyproject.toml,
[tool.mypy]) proves that process A's `Ipc`, process B's `RelayClient` and the tests' `FakeIpc` implement it,
and every call the parts make on their IPC handle is a method the port declares."""

import ast
import subprocess
import sys
import typing
from pathlib import Path

import real_counterparts
from ggdefender import ipc_port

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "components" / "ggdefender"
# the port, its implementations (each declares which port it is, under TYPE_CHECKING), the tests' fake of
# it, and the operation that makes A's typed call to B
CHECKED = ["components/ggdefender/ipc_port.py", "components/ggdefender/ipc.py",
           "components/ggdefender/relay_wire.py", "components/ggdefender/supervisor/relay_server.py",
           "components/ggdefender/collector/relay_client.py",
           "components/ggdefender/remediation/operations/collect_now.py", "tests/fake_ipc.py"]
PORTS = (ipc_port.IpcPort, ipc_port.SupervisorPort, ipc_port.CollectorPort)


def mypy(*args: str) -> subprocess.CompletedProcess:
    try:
        import mypy  # noqa: F401
    except ImportError:
        real_counterparts.unavailable("mypy", "pip install -e '.[dev]' (pins mypy) in the project's venv")
    # no cache in the clone: each run checks from scratch (a few seconds)
    return subprocess.run([sys.executable, "-m", "mypy", "--cache-dir=/dev/null", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_the_port_its_implementations_and_the_fake_type_check():
    out = mypy(*CHECKED)
    assert out.returncode == 0, out.stdout + out.stderr


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

