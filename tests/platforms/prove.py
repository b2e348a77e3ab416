"""Proves install-anywhere (issue 12) on real Debian bookworm root filesystems: amd64, and arm64 / armhf under
qemu-user-static.

For each platform: a copy of the cached root filesystem (rootfs.py: the distribution's python3, no compiler),
the component built as gdk builds it, the artifact of the recipe manifest that platform selects unpacked into
the root filesystem's package store as a nucleus does, then, inside the root filesystem with no network (only
loopback):

  1. the recipe's install step, with the recipe variables filled in as a nucleus fills them (timed; the disk
     footprint of the work folder is measured);
  2. `ggdefender collect --once` (its report must pass the Device Defender schema);
  3. the recipe's run step as a component of a `ggdefender local` core on the host (its IPC socket bind-mounted
     into the root filesystem, its SVCUID given as a nucleus gives it) until the offline Device Defender service
     accepts a report.

Prints a table per platform and asserts the bar; `--markdown FILE` writes the table for docs/platforms.md.
Needs root, debootstrap, qemu-user-static and binfmt-support (Debian packages). Usage:

    sudo .venv/bin/python tests/platforms/prove.py [--arch amd64 arm64 armhf] [--markdown docs/platforms.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform as host_platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(HERE), str(REPO / "tests"), str(REPO / "components")]

import rootfs  # noqa: E402
from project_copy import copy_project  # noqa: E402
from ggdefender import defaults  # noqa: E402
from ggdefender.collector.schema import validate_report  # noqa: E402
from ggdefender.devtools import build as component_build  # noqa: E402
from ggdefender.local.nucleus.lifecycle import component_env, install_artifacts  # noqa: E402
from ggdefender.local.nucleus.recipe import load_recipe  # noqa: E402
from ggdefender.local.nucleus.recipe_variables import VariableContext, interpolate  # noqa: E402
from ggdefender.local.ui.harness import LocalCore  # noqa: E402

NAME = "ggdefender.Defender"
THING = "platformProofThing"
GG_ROOT = "/greengrass/v2"  # the nucleus root inside the root filesystem
SOCKET = f"{GG_ROOT}/ipc.socket"
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
            "LANG": "C.UTF-8"}
# bounds, generous for qemu emulating a CPU on a shared host; never assertions about speed
INSTALL_TIMEOUT_S = 1800
COLLECT_TIMEOUT_S = 600
REPORT_TIMEOUT_S = 900
HEALTH_WAIT_S = 120
PROBE_TIMEOUT_S = 300
# what the run reports the Device Defender reports with: a 1 s development interval, no start jitter
RUN_CONFIGURATION = {"Collector": {"DevelopmentSampleIntervalSeconds": "1", "StartJitterPercent": "0"}}
# Under qemu-user a process's VmRSS also counts the emulator itself (its code and translation cache): process B
# shows ~52 MiB there against ~22 MiB natively, over the default 40 MiB limit, so process A would restart it
# before its first report. Emulated platforms get this limit; native ones keep the default.
EMULATED_CONFIGURATION = {"Supervisor": {"CollectorMemoryLimitMiB": "256"}}
LIBRARIES = ("awsiotsdk", "awscrt", "psutil", "cbor2", "PyYAML")


class ProofFailed(AssertionError):
    """A platform missed the bar; the message says which part and why."""


@dataclasses.dataclass
class Result:
    arch: str
    machine: str = ""
    gg_architecture: str = ""
    python: str = ""
    artifacts: list = dataclasses.field(default_factory=list)  # (file name, bytes) the manifest selects
    interfaces: list = dataclasses.field(default_factory=list)
    compilers: list = dataclasses.field(default_factory=list)
    install_s: float = 0.0
    work_bytes: int = 0
    unpacked_bytes: int = 0
    installed: dict = dataclasses.field(default_factory=dict)  # distribution -> version (None: absent)
    collect_s: float = 0.0
    first_report_s: float = 0.0
    accepted: int = 0
    rejected: int = 0
    ipc_client: str = ""
    ipc_client_reason: str = ""
    ipc_client_source: str = ""
    error: str = ""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def du_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True, timeout=120)
    return int(out.stdout.split()[0])


def run_inside(root: Path, argv: list, *, env: dict, cwd: str, timeout: float, log_file: Path,
               binds: dict | None = None) -> subprocess.CompletedProcess:
    """argv inside the root filesystem, output appended to log_file and returned; ProofFailed on a timeout."""
    cmd = rootfs.enter_command(root, argv, env=env, cwd=cwd, binds=binds)
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise ProofFailed(f"{' '.join(map(str, argv))[:200]} did not finish within {timeout:g} s") from exc
    with open(log_file, "ab") as fh:
        fh.write(f"$ {' '.join(map(str, argv))}\n".encode() + proc.stdout + proc.stderr +
                 f"(exit {proc.returncode})\n".encode())
    return proc


def step_env(recipe, step, ctx: VariableContext, svcuid: str) -> dict:
    """The environment a nucleus gives the step: the core's variables, then Setenv (recipe, then step)."""
    setenv = {k: interpolate(v, ctx) for k, v in recipe.setenv.items()}
    setenv.update({k: interpolate(v, ctx) for k, v in step.setenv.items()})
    return component_env(BASE_ENV, svcuid=svcuid, socket_path=SOCKET, thing_name=THING, region="us-east-1",
                         setenv=setenv)


def find_ipc_client(health_docs: list, log_text: str) -> tuple[str, str, str]:
    """(client, why, where it was read): the health document's (`ipcClient`) or else the log's word on the IPC
    client in use; empty strings when neither says."""
    def search(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if re.fullmatch(r"ipc_?client", str(key), re.I):
                    if isinstance(value, str) and value:
                        return value, ""
                    if isinstance(value, dict) and value.get("name"):
                        return str(value["name"]), str(value.get("reason") or "")
                found = search(value)
                if found:
                    return found
        return None

    for doc in reversed(health_docs):
        found = search(doc)
        if found:
            return (*found, "health document")
    match = re.search(r"IPC client: ([A-Za-z0-9_.-]+)(?: \(([^\n]*)\))?", log_text)
    if match:
        return match.group(1), match.group(2) or "", "component log"
    return "", "", ""


def prove(result: Result, built, work: Path) -> None:
    """Fills `result` as each stage passes (so a failure still shows what was measured before it)."""
    arch, machine, gg_arch = result.arch, result.machine, result.gg_architecture
    log_file = work / f"{arch}.log"
    base = rootfs.ensure(arch, log=log)
    root = work / arch / "rootfs"
    root.parent.mkdir(parents=True)
    # a copy per run, so the cached root filesystem stays pristine and each run starts from nothing installed
    subprocess.run(["cp", "-a", str(base), str(root)], check=True, timeout=600)
    result.compilers = rootfs.compilers_in(root)
    if result.compilers:
        raise ProofFailed(f"{arch}: compilers in the root filesystem: {result.compilers}")

    # the manifest this platform selects and its artifacts, unpacked into the package store as a nucleus does
    recipe = load_recipe(built.recipe, platform={"os": "linux", "architecture": gg_arch})
    staged = work / arch / "artifacts"
    for art in recipe.artifacts:
        source = built.artifact.parent / art["filename"]
        (staged / NAME / recipe.version).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, staged / NAME / recipe.version / art["filename"])
        result.artifacts.append((art["filename"], source.stat().st_size))
    gg_host = root / GG_ROOT.lstrip("/")
    store, unarchived = install_artifacts(recipe, staged, gg_host)
    result.unpacked_bytes = du_bytes(unarchived)
    work_path = f"{GG_ROOT}/work/{NAME}"
    (root / work_path.lstrip("/")).mkdir(parents=True)
    (gg_host / "ipc.socket").touch()  # the mount point of the core's socket
    inside = lambda p: "/" + str(Path(p).relative_to(root))  # noqa: E731

    result.python = run_inside(root, ["python3", "-c", "import platform; print(platform.python_version(), "
                                      "platform.machine())"], env=BASE_ENV, cwd="/", timeout=PROBE_TIMEOUT_S,
                               log_file=log_file).stdout.decode().strip()
    seen_machine = result.python.split()[-1] if result.python else ""
    if seen_machine != machine:
        raise ProofFailed(f"{arch}: the root filesystem's python3 reports machine {seen_machine!r}, not {machine}")
    # the network namespace the steps run in: /proc/net/dev lists its interfaces
    dev = run_inside(root, ["cat", "/proc/net/dev"], env=BASE_ENV, cwd="/", timeout=PROBE_TIMEOUT_S,
                     log_file=log_file).stdout.decode().splitlines()[2:]
    result.interfaces = [line.split(":")[0].strip() for line in dev]
    if result.interfaces != ["lo"]:
        raise ProofFailed(f"{arch}: the steps' network namespace has {result.interfaces}, not only lo")

    configuration = defaults.merged(recipe.default_configuration, RUN_CONFIGURATION)
    if rootfs.ARCHES[arch][2] is not None:
        configuration = defaults.merged(configuration, EMULATED_CONFIGURATION)
    with LocalCore(root=work / arch / "core", thing=THING) as core:
        svcuid = core.add_component(NAME, configuration=configuration, version=recipe.version)["SVCUID"]
        ctx = VariableContext(name=NAME, configuration=core.get_config(NAME), artifacts_path=inside(store),
                              decompressed_path=inside(unarchived), work_path=work_path, root_path=GG_ROOT,
                              thing_name=THING)
        binds = {core.runtime.socket_path: SOCKET}

        # 1. the recipe's install step, offline
        install = recipe.step("Install")
        script = interpolate(install.script, ctx)
        log(f"[{arch}] install: sh -c {script}")
        started = time.monotonic()
        proc = run_inside(root, ["sh", "-c", script], env=step_env(recipe, install, ctx, svcuid), cwd=work_path,
                          timeout=install.timeout or INSTALL_TIMEOUT_S, log_file=log_file)
        result.install_s = time.monotonic() - started
        if proc.returncode != 0:
            raise ProofFailed(f"{arch}: the install step failed (exit {proc.returncode}):\n"
                              + (proc.stdout + proc.stderr).decode(errors="replace")[-3000:])
        result.work_bytes = du_bytes(root / work_path.lstrip("/"))
        if rootfs.compilers_in(root):
            raise ProofFailed(f"{arch}: the install step left compilers: {rootfs.compilers_in(root)}")
        python = (root / work_path.lstrip("/") / "ggdefender-python").read_text().strip()
        probe = ("import json, importlib.metadata as m\n"
                 "def v(n):\n"
                 "    try: return m.version(n)\n"
                 "    except m.PackageNotFoundError: return None\n"
                 f"print(json.dumps({{n: v(n) for n in {list(LIBRARIES)!r}}}))")
        out = run_inside(root, [python, "-c", probe], env=BASE_ENV, cwd="/", timeout=PROBE_TIMEOUT_S,
                         log_file=log_file)
        result.installed = json.loads(out.stdout.decode().strip().splitlines()[-1])

        # 2. ggdefender collect --once, with the run step's environment (PYTHONPATH to the artifact)
        run = recipe.step("Run")
        env = step_env(recipe, run, ctx, svcuid)
        started = time.monotonic()
        proc = run_inside(root, [python, "-m", "ggdefender", "collect", "--once"], env=env, cwd=work_path,
                          timeout=COLLECT_TIMEOUT_S, log_file=log_file)
        result.collect_s = time.monotonic() - started
        problems = validate_report(proc.stdout, "json") if proc.returncode == 0 else ["exit status " +
                                                                                      str(proc.returncode)]
        if problems:
            raise ProofFailed(f"{arch}: `ggdefender collect --once` gave no valid report: {problems[:5]}\n"
                              + proc.stderr.decode(errors="replace")[-3000:])

        # 3. the run step as a component of the core on the host, until a report is accepted
        health = core.capture_iot(f"ggdefender/things/{THING}/health")
        defender = core.service("DefenderService")
        script = interpolate(run.script, ctx)
        log(f"[{arch}] run: sh -c {script}")
        started = time.monotonic()
        component = core.spawn(NAME, rootfs.enter_command(root, ["sh", "-c", script], env=env, cwd=work_path,
                                                          binds=binds), env=dict(BASE_ENV))
        deadline = started + REPORT_TIMEOUT_S
        while not defender.accepted and not defender.rejected and component.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        result.first_report_s = time.monotonic() - started
        result.accepted, result.rejected = defender.counts["accepted"], defender.counts["rejected"]
        if not defender.accepted:
            why = ("it exited with status %s" % component.returncode if component.poll() is not None
                   else f"none within {REPORT_TIMEOUT_S} s")
            raise ProofFailed(f"{arch}: no report accepted ({why}; rejected: {list(defender.rejected)[:2]}); "
                              f"component log tail:\n{core.log_text(NAME)[-3000:]}")
        # the health document names the IPC client; it is published at start and on every change
        health_deadline = time.monotonic() + HEALTH_WAIT_S
        while time.monotonic() < health_deadline:
            docs = [json.loads(p) for _t, p, *_ in list(health)]
            client = find_ipc_client(docs, core.log_text(NAME))
            if client[0]:
                result.ipc_client, result.ipc_client_reason, result.ipc_client_source = client
                break
            time.sleep(1)
        result.accepted, result.rejected = defender.counts["accepted"], defender.counts["rejected"]
        with open(log_file, "a", encoding="utf-8") as fh:
            fh.write(core.log_text(NAME))
    if result.rejected:
        raise ProofFailed(f"{arch}: the offline Device Defender rejected {result.rejected} report(s)")
    if not result.ipc_client:
        raise ProofFailed(f"{arch}: neither the health document nor the log says which IPC client the component "
                          f"uses (waited {HEALTH_WAIT_S} s)")
    # awsiotsdk where awscrt installed, the pure-Python client where it did not (GGDEFENDER_IPC_CLIENT=auto)
    expected = "awsiotsdk" if result.installed.get("awscrt") and result.installed.get("awsiotsdk") else "pure"
    if result.ipc_client != expected:
        raise ProofFailed(f"{arch}: the component uses the {result.ipc_client} IPC client, expected {expected} "
                          f"with awsiotsdk {result.installed.get('awsiotsdk')}, "
                          f"awscrt {result.installed.get('awscrt')}")


def mib(n: int) -> str:
    return f"{n / 2 ** 20:.1f} MiB"


def table(results: list) -> str:
    rows = [("Platform (Debian / uname / Greengrass)", "Python", "Artifacts", "Install (offline)",
             "Unpacked artifacts", "Work folder after install", "awsiotsdk / awscrt / psutil / cbor2 / PyYAML", "collect --once",
             "First report accepted", "IPC client", "Result")]
    for r in results:
        libs = " / ".join(r.installed.get(n) or "absent" for n in LIBRARIES) if r.installed else "-"
        rows.append((f"{r.arch} / {r.machine} / {r.gg_architecture}", r.python.split()[0] if r.python else "-",
                     " + ".join(f"{name} {mib(size)}" for name, size in r.artifacts) or "-",
                     f"{r.install_s:.0f} s" if r.work_bytes else "-",
                     mib(r.unpacked_bytes) if r.unpacked_bytes else "-", mib(r.work_bytes) if r.work_bytes else "-",
                     libs, f"{r.collect_s:.0f} s" if r.collect_s else "-",
                     f"{r.first_report_s:.0f} s ({r.accepted} accepted, {r.rejected} rejected)"
                     if r.accepted else "-",
                     (f"{r.ipc_client}" + (f": {r.ipc_client_reason}" if r.ipc_client_reason else "") +
                      (" (log)" if r.ipc_client_source == "component log" else "")) if r.ipc_client else "not stated",
                     "FAILED: " + r.error.splitlines()[0][:160].replace("|", "/") if r.error else "passed"))
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=list(rootfs.ARCHES), choices=list(rootfs.ARCHES))
    parser.add_argument("--markdown", type=Path, help="also write the result table (Markdown) to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (root filesystem copies, logs)")
    args = parser.parse_args(argv)

    problems = {arch: rootfs.missing_prerequisites(arch) for arch in args.arch}
    problems = {a: p for a, p in problems.items() if p}
    if problems:
        for arch, missing in problems.items():
            print(f"prove: {arch}: missing {'; '.join(missing)}", file=sys.stderr)
        return 2
    # SIGTERM (timeout, CI) unwinds like Ctrl-C: the core stops the component and the work folder goes
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    work = Path(tempfile.mkdtemp(prefix="ggdefender-platforms-"))
    results = []
    try:
        log(f"building the component into {work / 'project'}")
        built = component_build.build(copy_project(work / "project"))
        for arch in args.arch:
            results.append(Result(arch=arch, machine=rootfs.ARCHES[arch][0],
                                  gg_architecture=rootfs.ARCHES[arch][1]))
            try:
                prove(results[-1], built, work)
            except (ProofFailed, rootfs.RootfsError) as exc:
                results[-1].error = str(exc)
            log(f"[{arch}] " + ("FAILED: " + results[-1].error if results[-1].error else "passed") +
                f" (log: {work / (arch + '.log')})")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text = table(results)
    print(text)
    if args.markdown:
        stamp = time.strftime("%Y-%m-%d", time.gmtime())
        args.markdown.write_text(
            args.markdown.read_text().split("<!-- results -->")[0] + "<!-- results -->\n" +
            f"Measured {stamp} on a {host_platform.machine()} host with {os.cpu_count()} CPUs "
            "(arm64 and armhf emulated by qemu-user-static, so their times are far above real hardware's; "
            "they run with Supervisor.CollectorMemoryLimitMiB "
            f"{EMULATED_CONFIGURATION['Supervisor']['CollectorMemoryLimitMiB']} because the emulator's own "
            "memory counts in process B's VmRSS there):\n\n"
            + text + "\n" if args.markdown.exists() else text + "\n")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
