"""components/ggdefender/install.sh, the recipe's install step (shipped in the artifact): reuse of an interpreter
that has exactly the pinned requirements, a venv otherwise (offline from the platform's wheels artifact, or from
a package index when configured), the permissions the unprivileged collector needs, and the
<work>/ggdefender-python file the run step executes."""

import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import loopback_index
from ggdefender.devtools import build as b

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "components" / "ggdefender" / "install.sh"


def _install(tmp_path: Path, requirements: str, python: str, timeout: float = 120, **env):
    art, work = tmp_path / "art", tmp_path / "work"
    art.mkdir(exist_ok=True)
    work.mkdir(mode=0o700, exist_ok=True)
    (art / "requirements.txt").write_text(requirements)
    env = {**os.environ, "GGDEFENDER_PYTHON": python, **env}
    out = subprocess.run(["sh", str(SCRIPT), str(art), str(work)], env=env, capture_output=True, text=True,
                         timeout=timeout)
    return out, work


def _clean_python(tmp_path: Path) -> str:
    """An interpreter with none of the pins (a venv without pip), as on a fresh device."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "clean")], check=True, timeout=60)
    return str(tmp_path / "clean" / "bin" / "python")


def test_an_interpreter_with_the_pinned_requirements_is_used_as_it_is(tmp_path):
    out, work = _install(tmp_path, b.pinned_requirements(ROOT), sys.executable)
    assert out.returncode == 0, out.stderr
    assert "already has the pinned requirements" in out.stdout
    assert (work / "ggdefender-python").read_text() == sys.executable + "\n"
    assert not (work / "venv").exists() and not (work / "ggdefender-python.tmp").exists()
    mode = stat.S_IMODE(work.stat().st_mode)
    assert mode & 0o011 == 0o011 and mode & 0o022 == 0  # others may enter (to reach collector/), never write


def _pure_wheel(folder: Path, name: str, version: str) -> Path:
    """A minimal valid pure wheel (METADATA, WHEEL, RECORD with digests)."""
    import base64
    import hashlib

    files = {f"{name}/__init__.py": b"", f"{name}-{version}.dist-info/METADATA":
             f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = [f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}"
              for n, d in files.items()] + [f"{name}-{version}.dist-info/RECORD,,"]
    files[f"{name}-{version}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for n, d in files.items():
            zf.writestr(n, d)
    return path


def test_a_package_index_instead_when_configured(tmp_path):
    """Install.IndexUrl (GGDEFENDER_INDEX_URL in the step's environment, which the recipe sets from it):
    requirements.txt's pins from that index, here served on loopback; no wheels artifact needed. A user name and
    password in the URL stay out of the log."""
    pin = "ggdtestpkg==1.2.3\n"
    (tmp_path / "wheel").mkdir()
    loopback_index.layout(tmp_path / "index", [_pure_wheel(tmp_path / "wheel", "ggdtestpkg", "1.2.3")])
    with loopback_index.serve(tmp_path / "index", tmp_path / "index.log") as (index, log):
        with_login = index.replace("http://", "http://someone:s3cret@")
        out, work = _install(tmp_path, pin, _clean_python(tmp_path), timeout=300, GGDEFENDER_INDEX_URL=with_login)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "not satisfied: ggdtestpkg==1.2.3" in out.stdout
        assert f"from {tmp_path}/art/requirements.txt's pins, from the package index {index}" in out.stdout
        assert "s3cret" not in out.stdout + out.stderr
        assert "GET /simple/ggdtestpkg/ggdtestpkg-1.2.3-py3-none-any.whl" in log.read_text()  # really from it
        venv_python = work / "venv" / "bin" / "python"
        assert (work / "ggdefender-python").read_text() == f"{venv_python}\n"
        assert stat.S_IMODE((work / "venv").stat().st_mode) & 0o055 == 0o055  # readable by the collector's user
        again, _ = _install(tmp_path, pin, _clean_python(tmp_path), GGDEFENDER_INDEX_URL=index)
        assert again.returncode == 0 and "venv already matches" in again.stdout


@pytest.mark.parametrize("value, fragment", [
    ("ftp://example.com/simple", "expected an http:// or https:// URL with a host"),
    ("https:///simple", "expected an http:// or https:// URL with a host"),
    ("pypi.org/simple", "expected an http:// or https:// URL with a host"),
    ("https://x.org/$(touch PWNED)", "character(s) ' ' '$' '(' ')' not allowed"),
    ("https://x.org/simple; touch PWNED", "character(s) ' ' ';' not allowed"),
    ("https://x.org/`id`", "character(s) '`' not allowed"),
    ("https://x.org/s\nimple", "character(s) '\\n' not allowed"),
    ("https://x.org:port/simple", "not a URL"),
    ("https://x.org/" + "a" * 2100, "longer than 2048 characters"),
])
def test_a_bad_index_url_is_refused_naming_it_before_anything_changes(tmp_path, value, fragment):
    out, work = _install(tmp_path, "ggdtestpkg==1.2.3\n", _clean_python(tmp_path), GGDEFENDER_INDEX_URL=value)
    assert out.returncode == 2, out.stdout + out.stderr
    assert fragment in out.stderr and "Install.IndexUrl" in out.stderr, out.stderr
    assert "refused the component configuration's Install/IndexUrl" in out.stderr
    assert list(work.iterdir()) == []  # no venv, no ggdefender-python: the last good install stays


def test_without_a_wheels_artifact_or_an_index_it_says_what_to_do(tmp_path):
    out, work = _install(tmp_path, "cbor2==6.3.0\n", _clean_python(tmp_path), GGDEFENDER_INDEX_URL="")
    assert out.returncode == 1
    assert "no wheels artifact (ggdefender-wheels-<architecture>) beside" in out.stderr
    assert "set the configuration key Install/IndexUrl to install from a package index" in out.stderr
    assert not (work / "ggdefender-python").exists()


def test_a_python_the_wheels_artifact_has_no_wheels_for_is_named(tmp_path):
    wheels = tmp_path / "ggdefender-wheels-amd64"
    (wheels / "wheels").mkdir(parents=True)
    for tag in ("cp39", "cp99"):
        (wheels / f"requirements-{tag}.txt").write_text("cbor2==6.3.0\n")
    out, work = _install(tmp_path, "cbor2==6.3.0\n", _clean_python(tmp_path), GGDEFENDER_INDEX_URL="")
    version = ".".join(map(str, sys.version_info[:3]))
    assert out.returncode == 1
    assert f"ggdefender-wheels-amd64 has no wheels for Python {version}" in out.stderr
    assert "it has: cp39 cp99" in out.stderr and not (work / "ggdefender-python").exists()


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


COMPILERS = ("cc", "gcc", "g++", "c++", "clang", "rustc", "cargo", "cmake", "make", "ld")


def test_offline_install_from_this_platforms_artifact_invokes_no_compiler(tmp_path):
    """The real build's code zip and this machine's wheels zip, unpacked as a nucleus unpacks them, installed into
    a fresh venv by install.sh with no network (a network namespace with nothing in it when root, and pip told
    --no-index either way) and every compiler replaced by one that logs and fails."""
    from ggdefender.devtools import build as b, wheels as w
    from project_copy import copy_project

    machine = sysconfig.get_platform().split("-", 1)[1]
    arch = {p.machine: p.greengrass for p in w.PLATFORMS}.get(machine)
    version = "%d.%d" % sys.version_info[:2]
    if arch is None or version not in w.PYTHONS:
        pytest.skip(f"the build makes no wheels for {machine} / Python {version}")
    result = b.build(copy_project(tmp_path / "project"))
    unpacked = tmp_path / "decompressed"  # {artifacts:decompressedPath}: one folder per zip, named after it
    for path in (result.artifact, result.wheel_artifacts[arch]):
        with zipfile.ZipFile(path) as zf:
            zf.extractall(unpacked / path.stem)
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    fake = tmp_path / "compilers"
    fake.mkdir()
    log = tmp_path / "compiler.log"
    for name in COMPILERS:
        (fake / name).write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexit 1\n')
        (fake / name).chmod(0o755)
    env = {**os.environ, "GGDEFENDER_PYTHON": _clean_python(tmp_path), "PATH": f"{fake}:/usr/bin:/bin",
           "CC": str(fake / "cc"), "CXX": str(fake / "c++"), "GGDEFENDER_INDEX_URL": "",
           "PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": "", "PIP_EXTRA_INDEX_URL": ""}
    offline = ["unshare", "-n"] if os.geteuid() == 0 and shutil.which("unshare") else []
    code = unpacked / "ggdefender"
    command = [*offline, "sh", str(code / "ggdefender" / "install.sh"), str(code), str(work)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"from {code}/../ggdefender-wheels-{arch}/requirements-cp{version.replace('.', '')}.txt" in out.stdout
    venv_python = work / "venv" / "bin" / "python"
    assert (work / "ggdefender-python").read_text() == f"{venv_python}\n"
    check = subprocess.run([str(venv_python), "-c", "import awsiot, awscrt, cbor2, psutil, yaml, jsonschema; "
                            "import importlib.metadata as m; print(m.version('cbor2'), m.version('awsiotsdk'))"],
                           capture_output=True, text=True, timeout=60)
    assert check.stdout.split() == ["6.3.0", "1.31.0"], check.stderr
    # pip asks `rustc --version` for its user-agent string; nothing else may run a compiler
    calls = log.read_text().splitlines() if log.exists() else []
    assert set(calls) <= {"rustc --version"}, calls
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "venv already matches" in again.stdout, again.stdout + again.stderr


def test_with_every_platforms_wheels_unpacked_the_interpreters_machine_picks(tmp_path):
    """A deployment unpacks only its platform's wheels; an unpacked build (every zip) still installs, from the
    folder for this interpreter's machine."""
    from ggdefender.devtools import wheels as w

    machine = sysconfig.get_platform().split("-", 1)[1]
    mine = {p.machine: p.greengrass for p in w.PLATFORMS}.get(machine)
    if mine is None:
        pytest.skip(f"no wheels platform for {machine}")
    tag = "cp%d%d" % sys.version_info[:2]
    for p in w.PLATFORMS:
        folder = tmp_path / f"ggdefender-wheels-{p.greengrass}"
        (folder / "wheels").mkdir(parents=True)
        name = "ggdtestpkg" if p.greengrass == mine else f"missing{p.greengrass}"
        (folder / f"requirements-{tag}.txt").write_text(f"{name}==1.0\n")
        if p.greengrass == mine:
            _pure_wheel(folder / "wheels", "ggdtestpkg", "1.0")
    out, work = _install(tmp_path, "ggdtestpkg==1.0\n", _clean_python(tmp_path), timeout=300, GGDEFENDER_INDEX_URL="")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"ggdefender-wheels-{mine}/requirements-{tag}.txt" in out.stdout
