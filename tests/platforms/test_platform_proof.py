"""The platform proof (prove.py) and the pieces it stands on.

The proof itself builds Debian root filesystems and emulates arm64 / armhf with qemu: tens of minutes, so it
runs only when asked (GGDEFENDER_PLATFORM_PROOF=1, as root, with debootstrap and qemu-user-static); its
output is committed in docs/platforms.md. The checks of its building blocks (compiler detection, the
namespace a step runs in, the IPC client lookup) are quick and always run."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import prove  # noqa: E402
import rootfs  # noqa: E402
from real_counterparts import unavailable  # noqa: E402

PROOF_ENV = "GGDEFENDER_PLATFORM_PROOF"


def test_compilers_in_finds_plain_and_target_prefixed_compilers(tmp_path):
    (tmp_path / "usr/bin").mkdir(parents=True)
    for name in ("python3", "gcc-12", "cpp", "ld"):
        (tmp_path / "usr/bin" / name).touch()
    assert rootfs.compilers_in(tmp_path) == []
    (tmp_path / "usr/bin/arm-linux-gnueabihf-gcc-12").touch()
    (tmp_path / "usr/bin/cc").touch()
    assert rootfs.compilers_in(tmp_path) == ["/usr/bin/arm-linux-gnueabihf-gcc-12", "/usr/bin/cc"]


class FakeDebootstrap:
    """Stands in for debootstrap: fills the target folder (argv[-2]) with `files`, exits with `status`."""

    def __init__(self, files=("usr/bin/python3",), status=0):
        self.files, self.status, self.calls = files, status, 0

    def __call__(self, argv, **_kw):
        self.calls += 1
        target = Path(argv[-2])
        for name in self.files:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).touch()
        return subprocess.CompletedProcess(argv, self.status, "", "E: cannot reach the mirror\n")


@pytest.fixture
def fake_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(rootfs, "missing_prerequisites", lambda arch: [])
    return tmp_path / "ggdefender" / "rootfs"


def test_root_filesystem_is_built_once_and_reused(fake_cache, monkeypatch):
    fake = FakeDebootstrap(files=("usr/bin/python3", "var/cache/apt/archives/python3.deb"))
    monkeypatch.setattr(rootfs.subprocess, "run", fake)
    built = rootfs.ensure("arm64", log=lambda _m: None)
    assert built == fake_cache / "arm64" and (built / "usr/bin/python3").exists()
    assert not (built / "var/cache/apt/archives/python3.deb").exists()
    assert rootfs.ensure("arm64", log=lambda _m: None) == built and fake.calls == 1
    # built for another package set: built again
    (built / rootfs.COMPLETE).write_text("bookworm python3\n")
    rootfs.ensure("arm64", log=lambda _m: None)
    assert fake.calls == 2 and (built / rootfs.COMPLETE).read_text() == f"bookworm {' '.join(rootfs.PACKAGES)}\n"


@pytest.mark.parametrize("fake, problem", [
    (FakeDebootstrap(status=1), "debootstrap armhf failed \\(exit 1\\):\nE: cannot reach the mirror"),
    (FakeDebootstrap(files=("usr/bin/python3", "usr/bin/arm-linux-gnueabihf-gcc-12")),
     "armhf root filesystem has compilers \\(/usr/bin/arm-linux-gnueabihf-gcc-12\\)"),
])
def test_a_failed_or_compiler_carrying_build_is_never_cached(fake_cache, monkeypatch, fake, problem):
    monkeypatch.setattr(rootfs.subprocess, "run", fake)
    with pytest.raises(rootfs.RootfsError, match=problem):
        rootfs.ensure("armhf", log=lambda _m: None)
    assert not (fake_cache / "armhf").exists()
    # the next attempt starts over from an empty folder
    monkeypatch.setattr(rootfs.subprocess, "run", FakeDebootstrap())
    assert sorted(p.name for p in rootfs.ensure("armhf", log=lambda _m: None).rglob("*") if p.is_file()) == \
        [rootfs.COMPLETE, "python3"]


def test_unknown_architecture_is_named():
    assert rootfs.missing_prerequisites("sparc") == ["unknown Debian architecture 'sparc' (one of amd64, arm64, armhf)"]


def test_enter_command_refuses_a_missing_bind_target(tmp_path):
    with pytest.raises(rootfs.RootfsError, match="bind target /greengrass/v2/ipc.socket does not exist"):
        rootfs.enter_command(tmp_path, ["true"], env={}, binds={"/dev/null": "/greengrass/v2/ipc.socket"})


def _need_namespaces():
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare (util-linux) and ip (iproute2) for namespaces")


@pytest.mark.netns
def test_steps_run_with_only_loopback_and_the_bind_mounted_file(tmp_path):
    # the host's own root as the "root filesystem": what the namespace gives is what matters here
    _need_namespaces()
    source = tmp_path / "socket-stand-in"
    source.write_text("from the host\n")
    target = tmp_path / "target"
    target.touch()
    # a listener on the host's loopback: the step's own loopback is another one, so it cannot reach it
    host = socket.create_server(("127.0.0.1", 0))
    port = host.getsockname()[1]
    probe = (f"import socket; s = socket.socket(); s.settimeout(5); print(s.connect_ex(('127.0.0.1', {port})) != 0)")
    script = f"cat /proc/net/dev; {sys.executable} -c \"{probe}\"; cat target; echo $HOME; pwd"
    cmd = rootfs.enter_command(Path("/"), ["sh", "-c", script], env={"PATH": "/usr/bin:/bin", "HOME": "/nowhere"},
                               cwd=str(tmp_path), binds={str(source): str(target)})
    with host:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    interfaces = [line.split(":")[0].strip() for line in out[2:] if ":" in line]
    assert interfaces == ["lo"]
    assert out[-4:] == ["True", "from the host", "/nowhere", str(tmp_path)]
    # the bind mount lived in the namespace only
    assert target.read_text() == ""


def test_ipc_client_is_read_from_health_then_log():
    doc = {"ipcClient": {"name": "pure", "reason": "awscrt is not installed"}}
    assert prove.find_ipc_client([{}, doc], "") == ("pure", "awscrt is not installed", "health document")
    assert prove.find_ipc_client([{"parts": {"a": {"ipc_client": "awsiotsdk"}}}], "") == ("awsiotsdk", "",
                                                                                          "health document")
    assert prove.find_ipc_client([{}], "2026 INFO IPC client: awsiotsdk (the default)\nnext") == \
        ("awsiotsdk", "the default", "component log")
    assert prove.find_ipc_client([{"ipcClient": {}}], "nothing here") == ("", "", "")


def test_table_shows_failures_and_measurements():
    ok = prove.Result(arch="arm64", machine="aarch64", gg_architecture="aarch64", python="3.11.2 aarch64",
                      artifacts=[("ggdefender.zip", 2 ** 19), ("ggdefender-wheels-aarch64.zip", 2 ** 21)],
                      install_s=12.4, unpacked_bytes=5 * 2 ** 20, work_bytes=3 * 2 ** 20,
                      installed={"awsiotsdk": "1.0", "awscrt": "0.36.1"}, collect_s=3, first_report_s=40,
                      accepted=2, ipc_client="awsiotsdk", ipc_client_reason="awscrt imports",
                      ipc_client_source="health document")
    bad = prove.Result(arch="armhf", machine="armv7l", gg_architecture="arm", error="install failed\nmore")
    text = prove.table([ok, bad])
    assert "| arm64 / aarch64 / aarch64 | 3.11.2 | ggdefender.zip 0.5 MiB + ggdefender-wheels-aarch64.zip 2.0 MiB " \
        "| 12 s | 5.0 MiB | 3.0 MiB |" in text
    assert "| 1.0 / 0.36.1 / absent / absent / absent | 3 s | 40 s (2 accepted, 0 rejected) | awsiotsdk: " \
        "awscrt imports | passed |" in text
    assert "| armhf / armv7l / arm | - | - | - | - | - | - | - | - | not stated | FAILED: install failed |" in text


@pytest.mark.timeout(50 * 60)  # the proof's own steps are bounded; this bounds the whole (CI: about 9 min cold)
def test_platform_proof():
    if os.environ.get(PROOF_ENV) != "1":
        pytest.skip(f"the platform proof builds Debian root filesystems and emulates arm with qemu (tens of "
                    f"minutes): set {PROOF_ENV}=1 to run it (as root, with debootstrap and qemu-user-static); "
                    "its last output is in docs/platforms.md")
    arches = os.environ.get("GGDEFENDER_PLATFORM_ARCHES", " ".join(rootfs.ARCHES)).split()
    missing = [f"{a}: {'; '.join(p)}" for a in arches if (p := rootfs.missing_prerequisites(a))]
    if missing:
        unavailable("what the platform proof needs", " | ".join(missing))
    proc = subprocess.run([sys.executable, str(HERE / "prove.py"), "--arch", *arches], capture_output=True,
                          text=True, timeout=45 * 60)
    print(proc.stdout[-20000:], proc.stderr[-5000:])
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
