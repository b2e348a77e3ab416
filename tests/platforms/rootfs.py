"""Debian bookworm root filesystems for the platform proof: built once with debootstrap, cached, and entered
with chroot (foreign architectures run under qemu-user-static through binfmt_misc).

A root filesystem is built into `<arch>.partial` and renamed to `<arch>` only once complete and checked, so
the cache never holds a half-built one. It is minimal: the distribution's python3 and python3-venv, and no
compiler (checked, so the install step provably cannot compile anything)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

SUITE = "bookworm"
MIRROR = os.environ.get("GGDEFENDER_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = ("python3", "python3-venv")
# What a C build would need; none may exist in the root filesystem.
COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "tcc", "c89", "c99")
COMPLETE = ".ggdefender-rootfs-complete"
BUILD_TIMEOUT_S = 3600  # debootstrap's second stage under qemu takes minutes; bounded all the same

# Debian architecture -> (uname machine, Greengrass Platform.architecture, qemu binfmt entry or None)
ARCHES = {
    "amd64": ("x86_64", "amd64", None),
    "arm64": ("aarch64", "aarch64", "qemu-aarch64"),
    "armhf": ("armv7l", "arm", "qemu-arm"),
}


class RootfsError(RuntimeError):
    """The root filesystem cannot be built or entered; the message says what is missing."""


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ggdefender" / "rootfs"


def missing_prerequisites(arch: str) -> list[str]:
    """What this machine lacks to build and enter a root filesystem of `arch` (empty when ready)."""
    if arch not in ARCHES:
        return [f"unknown Debian architecture {arch!r} (one of {', '.join(ARCHES)})"]
    missing = []
    if os.geteuid() != 0:
        missing.append("root (debootstrap, chroot, mount and unshare need it)")
    for tool, pkg in (("debootstrap", "debootstrap"), ("unshare", "util-linux"), ("ip", "iproute2")):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (Debian package {pkg})")
    native = ARCHES[arch][0] == platform.machine()
    binfmt = ARCHES[arch][2]
    if not native:
        entry = Path("/proc/sys/fs/binfmt_misc") / (binfmt or "")
        if not entry.exists():
            missing.append(f"binfmt_misc handler {binfmt} (Debian packages qemu-user-static binfmt-support)")
        elif "F" not in _binfmt_flags(entry):
            # without F the interpreter is looked up inside the chroot, where it does not exist
            missing.append(f"binfmt_misc handler {binfmt} with the F flag (qemu-user-static registers it so)")
    return missing


def _binfmt_flags(entry: Path) -> str:
    for line in entry.read_text().splitlines():
        if line.startswith("flags:"):
            return line.split(":", 1)[1].strip()
    return ""


def compilers_in(root: Path) -> list[str]:
    """Compilers found in the root filesystem's bin directories (including target-prefixed gcc)."""
    found = []
    for bindir in ("usr/bin", "bin", "usr/local/bin", "usr/sbin", "sbin"):
        d = root / bindir
        if not d.is_dir():
            continue
        for entry in d.iterdir():
            name = entry.name
            if name in COMPILERS or name.endswith(("-gcc", "-cc", "-g++", "-c++")) or "-gcc-" in name:
                found.append(f"/{bindir}/{name}")
    return sorted(found)


def ensure(arch: str, log=print) -> Path:
    """The cached root filesystem of `arch`, built first when absent. Raises RootfsError naming the problem."""
    problems = missing_prerequisites(arch)
    if problems:
        raise RootfsError(f"cannot build a {arch} root filesystem: missing " + "; ".join(problems))
    final = cache_dir() / arch
    wanted = f"{SUITE} {' '.join(PACKAGES)}\n"
    if (final / COMPLETE).is_file():
        if (final / COMPLETE).read_text() == wanted:
            return final
        log(f"[{arch}] {final} was built for {(final / COMPLETE).read_text().strip()!r}: building it again")
        shutil.rmtree(final)
    if final.exists():
        raise RootfsError(f"{final} exists but is not a complete root filesystem (no {COMPLETE}); remove it")
    partial = cache_dir() / f"{arch}.partial"
    if partial.exists():
        shutil.rmtree(partial)  # a build interrupted earlier: start over
    partial.parent.mkdir(parents=True, exist_ok=True)
    log(f"[{arch}] debootstrap {SUITE} ({', '.join(PACKAGES)}) into {partial}")
    started = time.monotonic()
    cmd = ["debootstrap", f"--arch={arch}", "--variant=minbase", "--include=" + ",".join(PACKAGES),
           SUITE, str(partial), MIRROR]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise RootfsError(f"debootstrap {arch} did not finish within {BUILD_TIMEOUT_S} s") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise RootfsError(f"debootstrap {arch} failed (exit {proc.returncode}):\n{tail}")
    compilers = compilers_in(partial)
    if compilers:
        raise RootfsError(f"{arch} root filesystem has compilers ({', '.join(compilers)}); remove the package "
                          "that pulls them from PACKAGES")
    for deb in (partial / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()  # installed already; each copy of the root filesystem would carry them
    (partial / COMPLETE).write_text(wanted)
    partial.rename(final)
    log(f"[{arch}] root filesystem ready in {time.monotonic() - started:.0f} s")
    return final


# Runs inside fresh mount, PID and network namespaces (/proc and /sys as a device has them, mounted from inside
# so they show the namespaces' processes and interfaces): every mount made here vanishes with the namespace (nothing
# to unmount on the host, even after a crash), every process dies with it, and the only interface is loopback.
_PRELUDE = r"""
set -eu
root=$1; shift
ip link set lo up
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --rbind /dev "$root/dev"
while [ "$1" != -- ]; do
  mount --bind "$1" "$root$2"; shift 2
done
shift
exec chroot "$root" "$@"
"""


def enter_command(root: Path, argv: list[str], *, env: dict[str, str], cwd: str = "/",
                  binds: dict[str, str] | None = None) -> list[str]:
    """The command line that runs `argv` inside `root` (cwd `cwd`, exactly the environment `env`) in private
    mount, PID and network namespaces with only loopback up; each host path of `binds` is bind-mounted over
    the path inside `root` it maps to (which must exist). Killing the returned command kills all it started."""
    bind_args: list[str] = []
    for source, target in (binds or {}).items():
        if not (root / target.lstrip("/")).exists():
            raise RootfsError(f"bind target {target} does not exist in {root}")
        bind_args += [str(source), target]
    env_args = [f"{k}={v}" for k, v in env.items()]
    return ["unshare", "--mount", "--pid", "--net", "--fork", "--kill-child", "sh", "-c", _PRELUDE, "prelude",
            str(root), *bind_args, "--", "/usr/bin/env", "-i", *env_args, "sh", "-c", 'cd "$0" && exec "$@"',
            cwd, *argv]
