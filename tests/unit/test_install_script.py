"""components/ggdefender/install.sh, the recipe's install step (shipped in the artifact): reuse of an interpreter
that has exactly the pinned requirements, a venv otherwise, the permissions the unprivileged collector needs,
and the <work>/ggdefender-python file the run step executes."""

import ensurepip
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ggdefender.devtools import build as b

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "components" / "ggdefender" / "install.sh"


def _install(tmp_path: Path, requirements: str, python: str, timeout: float = 120):
    art, work = tmp_path / "art", tmp_path / "work"
    art.mkdir(exist_ok=True)
    work.mkdir(mode=0o700, exist_ok=True)
    (art / "requirements.txt").write_text(requirements)
    env = {**os.environ, "GGDEFENDER_PYTHON": python}
    out = subprocess.run(["sh", str(SCRIPT), str(art), str(work)], env=env, capture_output=True, text=True,
                         timeout=timeout)
    return out, work


def test_an_interpreter_with_the_pinned_requirements_is_used_as_it_is(tmp_path):
    out, work = _install(tmp_path, b.pinned_requirements(ROOT), sys.executable)
    assert out.returncode == 0, out.stderr
    assert "already has the pinned requirements" in out.stdout
    assert (work / "ggdefender-python").read_text() == sys.executable + "\n"
    assert not (work / "venv").exists() and not (work / "ggdefender-python.tmp").exists()
    mode = stat.S_IMODE(work.stat().st_mode)
    assert mode & 0o011 == 0o011 and mode & 0o022 == 0  # others may enter (to reach collector/), never write


def test_otherwise_a_venv_in_the_work_folder_gets_them(tmp_path):
    # a pin the test interpreter lacks but a fresh venv has without any download: the pip ensurepip bundles
    bundled = ensurepip.version()
    from importlib.metadata import version

    if version("pip") == bundled:
        pytest.skip(f"this interpreter's pip is the bundled {bundled}: nothing to tell the two paths apart")
    out, work = _install(tmp_path, f"pip=={bundled}\n", sys.executable, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"not satisfied: pip=={bundled}" in out.stdout and "creating" in out.stdout
    venv_python = work / "venv" / "bin" / "python"
    assert (work / "ggdefender-python").read_text() == f"{venv_python}\n"
    assert stat.S_IMODE((work / "venv").stat().st_mode) & 0o055 == 0o055  # readable by the collector's user
    again, _ = _install(tmp_path, f"pip=={bundled}\n", sys.executable)  # a second install reuses it
    assert again.returncode == 0 and "venv already matches requirements.txt" in again.stdout


def test_too_old_a_python_is_named(tmp_path):
    fake = tmp_path / "python3.9"
    fake.write_text('#!/bin/sh\n[ "$1" = "-V" ] && echo "Python 3.9.18"\nexit 1\n')
    fake.chmod(0o755)
    out, work = _install(tmp_path, "cbor2==5.6.0\n", str(fake))
    assert out.returncode == 1
    assert f"needs Python >= 3.10, {fake} is Python 3.9.18; set GGDEFENDER_PYTHON" in out.stderr
    assert not (work / "ggdefender-python").exists()


def test_wrong_arguments_are_refused_before_anything_is_done(tmp_path):
    out = subprocess.run(["sh", str(SCRIPT), str(tmp_path / "missing")], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "usage: sh install.sh" in out.stderr
