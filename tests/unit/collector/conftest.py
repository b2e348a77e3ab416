import json
from pathlib import Path

import pytest

from ggdefender.collector.sources.procfs import ProcfsSource
from ggdefender.collector.sources.data import InterfaceFilter, InterfaceMap

DATA = Path(__file__).resolve().parents[2] / "data"
PROC = DATA / "proc"
GOLDEN = DATA / "golden"


def fixture_source(case: str, include=("*",), exclude=("lo",)) -> ProcfsSource:
    """A procfs source over a recorded tree (little-endian, like the host that printed it)."""
    root = PROC / case
    ifmap = InterfaceMap.from_dict(json.loads((root / "interfaces.json").read_text()))
    return ProcfsSource(proc_root=str(root), interfaces=ifmap,
                        interface_filter=InterfaceFilter(include, exclude), byteorder="little")


@pytest.fixture
def source():
    return fixture_source


@pytest.fixture
def golden():
    return lambda name: json.loads((GOLDEN / name).read_text())
