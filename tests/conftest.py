"""Test folders the component's unprivileged collector can reach when the tests run as root.

As root, process A starts process B as an unprivileged user (`nobody` by default), and B must reach its state
folder inside the test's core root. pytest keeps its temporary folders private (0700, under a 0700
/tmp/pytest-of-root that every pytest run resets to 0700), so as root each run gets its own base folder under
/tmp and every temporary folder is made traversable (0711: others may enter, not list). Non-root runs keep
pytest's defaults: nothing is dropped there.
"""

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

TRAVERSABLE = 0o711
RUNS_ROOT_NAME = "ggdefender-pytest-root"
KEEP_RUNS = 3  # like pytest: the base folders of the last few runs stay for a look after a failure
MIN_AGE_TO_PRUNE = 2 * 3600  # never prune a run that may still be going (runs can overlap)


def _runs_root() -> Path:
    root = Path(tempfile.gettempdir()) / RUNS_ROOT_NAME
    try:
        root.mkdir(mode=TRAVERSABLE)
    except FileExistsError:
        pass
    info = os.lstat(root)
    if not os.path.isdir(root) or os.path.islink(root) or info.st_uid != os.geteuid():
        raise pytest.UsageError(f"{root} is not a folder owned by us; remove it or pass --basetemp")
    os.chmod(root, TRAVERSABLE)
    return root


def _prune(root: Path) -> None:
    runs = sorted((p for p in root.iterdir() if p.name.startswith("run-")), key=lambda p: p.stat().st_mtime)
    now = time.time()
    for old in runs[:-KEEP_RUNS]:
        if now - old.stat().st_mtime > MIN_AGE_TO_PRUNE:
            shutil.rmtree(old, ignore_errors=True)


def pytest_configure(config):
    if os.geteuid() != 0 or config.option.basetemp:
        return
    root = _runs_root()
    _prune(root)
    run = Path(tempfile.mkdtemp(prefix="run-", dir=root))
    os.chmod(run, TRAVERSABLE)
    config.option.basetemp = str(run / "t")  # pytest (re)creates it 0700: see _traversable below


def _traversable(path: Path) -> Path:
    base = Path(tempfile.gettempdir()) / RUNS_ROOT_NAME
    for p in [path, *path.parents]:
        if p == base or base not in p.parents:
            break
        os.chmod(p, TRAVERSABLE)
    return path


@pytest.fixture(scope="session", autouse=True)
def _traversable_tmp_folders(tmp_path_factory):
    if os.geteuid() != 0:
        yield
        return
    _traversable(tmp_path_factory.getbasetemp())
    mktemp = tmp_path_factory.mktemp  # tmp_path comes from it too
    tmp_path_factory.mktemp = lambda *a, **kw: _traversable(mktemp(*a, **kw))
    yield



@pytest.fixture
def doc(monkeypatch):
    """A fresh health document for the test: what parts report (verdicts, states) lands here."""
    from ggdefender import health

    h = health.Health()
    monkeypatch.setattr(health, "process_health", lambda: h)
    return h
