"""Shared by the integration tests: the component built as gdk would build it, a real loopback listener, and
the bounded waits and port probes the tests use around them."""

import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ggdefender.devtools import build as b
from ggdefender import defaults
from project_copy import copy_project

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "ggdefender.Defender.yaml"


def recipe_configuration() -> dict:
    """The recipe's DefaultConfiguration (accessControl, Install.IndexUrl): what a nucleus gives the component before any
    MERGE; the component fills in the rest from its code defaults."""
    return yaml.safe_load(RECIPE.read_text())["ComponentConfiguration"]["DefaultConfiguration"]


def full_configuration() -> dict:
    """Every setting at its code default plus the recipe's accessControl, for tests that edit sections in
    place (the same values the component reads when given only the recipe's configuration)."""
    return defaults.merged(defaults.DEFAULTS, recipe_configuration())


def build_copy(root: Path):
    """Build the component from a copy of the project in `root` (never the working tree's greengrass-build/)."""
    return b.build(copy_project(root))


def loopback_listener():
    """(process, port): a real process listening on a free TCP port of 127.0.0.1 (a child of the test)."""
    code = ("import socket, time\n"
            "s = socket.socket()\n"
            "s.bind(('127.0.0.1', 0))\n"
            "s.listen(5)\n"
            "print(s.getsockname()[1], flush=True)\n"
            "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port now."""
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    """predicate()'s first truthy value within timeout seconds; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"not within {timeout:g} s: {what}")
