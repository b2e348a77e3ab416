"""AWS IoT Greengrass nucleus lite (the real C nucleus) as a test core, without systemd.

`LiteCore` starts, in private mount + network namespaces (tmpfs on /run, where lite hard-codes its core-bus
sockets; a loopback of its own, where iotcored dials <iotDataEndpoint>:8883), a TLS mosquitto with a
throw-away CA standing in for IoT Core (mutual TLS, as iotcored needs), and lite's ggconfigd, ggpubsubd,
iotcored and ggipcd. Components are deployed the way lite's deployment leaves them (recipe in
packages/recipes/<name>-<version>.yaml, artifacts in packages/artifacts/<name>/<version>/, ZIP artifacts
unpacked in packages/artifacts-unarchived/<name>/<version>/<zip name>/, DefaultConfiguration plus the test's
merge under services/<name>/configuration) and their lifecycle phases run through the REAL recipe-runner from a
cgroup named ggl.<name>.service (under a slice of this instance), the systemd unit name ggipcd authenticates a
peer by.

What lite needs systemd for (gghealthd: UpdateState, RestartComponent; ggdeploymentd) is not started, so those
calls fail here exactly as on a device whose nucleus cannot reach systemd.

Everything is stopped by pid with bounded waits, and the cgroups are removed (`stop()`); every process of an
instance lives in its cgroup slice, so what a killed test session left behind is ended by the next one
(`reap_stale()`).
"""

from __future__ import annotations

import ctypes
import datetime
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import zipfile
from pathlib import Path
from typing import Callable, Optional

import yaml

from ggdefender.local.nucleus.recipe import current_platform, select_manifest

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build_lite.sh"
BUILD_TIMEOUT = 1200  # a cold build takes ~1 min on 2 cores; a stuck build is not waited on forever
MISSING_EXIT = 3  # build_lite.sh: something the build needs is not installed
THING = "ggdefender-lite-thing"
DAEMONS = ("ggconfigd", "ggpubsubd", "iotcored", "ggipcd")
CLONE_NEWNET = 0x40000000
STOP_WAIT = 10.0


class LiteUnavailable(RuntimeError):
    """Lite cannot be built or started on this machine; the message says what is missing and how to get it."""


def build() -> Path:
    """The folder of the built lite daemons (bin/), built once per commit and cached (build_lite.sh)."""
    try:
        done = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"building nucleus lite took over {BUILD_TIMEOUT} s") from None
    if done.returncode == MISSING_EXIT:
        raise LiteUnavailable(done.stderr.strip())
    if done.returncode != 0:
        raise RuntimeError(f"building nucleus lite failed:\n{done.stderr[-4000:]}")
    return Path(done.stdout.strip().splitlines()[-1]) / "bin"


def cgroup2_base() -> Path:
    """The cgroup2 hierarchy libsystemd's sd_pid_get_unit() reads (ggipcd's peer authentication)."""
    for base in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if (base / "cgroup.procs").exists() and (base / "cgroup.controllers").exists():
            return base
    raise LiteUnavailable("no cgroup2 hierarchy (/sys/fs/cgroup or /sys/fs/cgroup/unified): ggipcd "
                          "authenticates components by their cgroup")


def check_host() -> None:
    """Raise LiteUnavailable unless this machine can run lite's daemons in private namespaces."""
    if os.geteuid() != 0:
        raise LiteUnavailable("running nucleus lite needs root (private namespaces, cgroups)")
    for tool, package in (("unshare", "util-linux"), ("nsenter", "util-linux"), ("ip", "iproute2"),
                          ("mosquitto", "mosquitto"), ("openssl", "openssl")):
        if shutil.which(tool) is None:
            raise LiteUnavailable(f"no '{tool}': install the Debian package {package}")
    cgroup2_base()


SLICE_PREFIX = "ggdefender-lite-"


def _remove_slice(slice_dir: Path) -> None:
    """End every process left in an instance's cgroups and remove them."""
    if not slice_dir.is_dir():
        return
    for child in [p for p in slice_dir.iterdir() if p.is_dir()]:
        LiteCore._kill_cgroup(child)
    try:
        slice_dir.rmdir()
    except OSError:
        pass


def reap_stale() -> None:
    """What a test session killed before its clean-up left behind (its pid is gone): processes and cgroups."""
    try:
        base = cgroup2_base()
    except LiteUnavailable:
        return
    for slice_dir in base.glob(f"{SLICE_PREFIX}*.slice"):
        pid = slice_dir.name[len(SLICE_PREFIX):-len(".slice")]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _remove_slice(slice_dir)


def join_netns(pid: int) -> Callable[[], None]:
    """A function that moves the calling thread into `pid`'s network namespace (setns is per thread)."""
    def enter() -> None:
        fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        try:
            if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns(CLONE_NEWNET) failed")
        finally:
            os.close(fd)
    return enter


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class Component:
    """A component to deploy: its recipe as built, the folder of its artifacts, a configuration MERGE."""

    def __init__(self, recipe: Path, artifacts: Optional[Path] = None, merge: Optional[dict] = None):
        self.recipe_path = Path(recipe)
        text = self.recipe_path.read_text()
        self.recipe = json.loads(text) if self.recipe_path.suffix == ".json" else yaml.safe_load(text)
        self.name = self.recipe["ComponentName"]
        self.version = self.recipe["ComponentVersion"]
        self.artifacts = Path(artifacts) if artifacts else None
        self.merge = merge or {}

    def default_configuration(self) -> dict:
        return (self.recipe.get("ComponentConfiguration") or {}).get("DefaultConfiguration") or {}

    def selected_artifacts(self) -> dict:
        """{file name: unarchive} of the manifest lite selects on this machine: lite's deployment downloads and
        unpacks only that manifest's artifacts (os linux, its architecture name, runtime aws_nucleus_lite)."""
        platform = dict(current_platform(), runtime="aws_nucleus_lite")
        manifest = select_manifest(self.recipe.get("Manifests") or [], platform, str(self.recipe_path))
        return {a["URI"].rsplit("/", 1)[-1]: str(a.get("Unarchive", "NONE")).upper()
                for a in manifest.get("Artifacts") or []}


class Running:
    """One lifecycle phase of a component run by recipe-runner (its process group and log)."""

    def __init__(self, component: str, phase: str, proc: subprocess.Popen, log: Path):
        self.component, self.phase, self.proc, self.log = component, phase, proc, log

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class LiteCore:
    def __init__(self, bin_dir: Path, base: Path, components: list, *, thing: str = THING,
                 env: Optional[dict] = None):
        self.bin = Path(bin_dir)
        self.base = Path(base)
        self.thing = thing
        self.components = {c.name: c for c in components}
        self.env = env or {}  # extra environment of the lifecycle phases (e.g. GGDEFENDER_PYTHON)
        self.root = self.base / "root"  # lite's rootPath
        self.logs = self.base / "logs"
        self.certs = self.base / "certs"
        self.socket = self.root / "gg-ipc.socket"
        # the components' cgroups live under a slice of this instance, so two test sessions on one machine never
        # touch each other's processes; libsystemd skips *.slice levels when it names a process's unit
        self.cgroups = cgroup2_base() / f"{SLICE_PREFIX}{os.getpid()}.slice"
        self._daemon_cgroup = self.cgroups / "daemons"  # the namespace holder, the broker, lite's daemons
        self._ns: Optional[subprocess.Popen] = None
        self._daemons: dict = {}
        self._phases: list = []
        self._svcuids: dict = {}
        self._started: list = []  # (what, Popen) of everything stop() ended, for leftovers()

    # -- set-up -------------------------------------------------------------------------------------------------
    def _make_certs(self) -> None:
        """A throw-away CA, a server certificate for 127.0.0.1/localhost, a device (client) certificate."""
        self.certs.mkdir(parents=True)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

        def ssl(*args: str) -> None:
            subprocess.run(["openssl", *args], cwd=self.certs, check=True, capture_output=True, timeout=60)

        ssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=lite-test-ca")
        for name, subject, ext in (
                ("server", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
                ("device", f"/CN={self.thing}", "extendedKeyUsage=clientAuth\n")):
            (self.certs / f"{name}.ext").write_text(ext)
            ssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)
            ssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
        os.chmod(self.certs / "server.key", 0o644)  # mosquitto drops to its own user; a throw-away key

    def client_tls(self) -> tuple:
        """(ca, cert, key) for an MQTT client of the broker (the device's certificate)."""
        return str(self.certs / "ca.pem"), str(self.certs / "device.pem"), str(self.certs / "device.key")

    def _write_config(self) -> None:
        (self.base / "mosquitto.conf").write_text(
            f"listener 8883 127.0.0.1\ncafile {self.certs}/ca.pem\ncertfile {self.certs}/server.pem\n"
            f"keyfile {self.certs}/server.key\nrequire_certificate true\nuse_identity_as_username true\n"
            "allow_anonymous true\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n"
            "log_type notice\n")
        services = {"aws.greengrass.NucleusLite": {
            "componentType": "NUCLEUS", "version": "2.6.0",
            "configuration": {"awsRegion": "us-east-1", "iotCredEndpoint": "localhost",
                              "iotDataEndpoint": "localhost", "iotRoleAlias": "none",
                              "runWithDefault": {"posixUser": "root:root"}, "greengrassDataPlanePort": "8443",
                              "platformOverride": {}}}}
        for c in self.components.values():
            # the recipe's DefaultConfiguration as lite's deployment writes it (from YAML: scalars are strings);
            # the test's merge comes after start, typed, as a deployment's configurationUpdate (JSON) would
            services[c.name] = {"version": c.version, "configuration": c.default_configuration()}
        config = {"system": {"privateKeyPath": str(self.certs / "device.key"),
                             "certificateFilePath": str(self.certs / "device.pem"),
                             "rootCaPath": str(self.certs / "ca.pem"), "rootPath": str(self.root),
                             "thingName": self.thing},
                  "services": services}
        (self.base / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        (self.base / "config.d").mkdir()

    def _deploy_files(self) -> None:
        recipes = self.root / "packages" / "recipes"
        recipes.mkdir(parents=True)
        for c in self.components.values():
            shutil.copy(c.recipe_path, recipes / f"{c.name}-{c.version}{c.recipe_path.suffix}")
            (self.root / "work" / c.name).mkdir(parents=True)
            if c.artifacts is None:
                continue
            store = self.root / "packages" / "artifacts" / c.name / c.version
            store.mkdir(parents=True)
            selected = c.selected_artifacts()
            for name in selected:
                shutil.copy(c.artifacts / name, store / name)
            unpacked = self.root / "packages" / "artifacts-unarchived" / c.name / c.version
            for zip_name in sorted(n for n, unarchive in selected.items() if unarchive == "ZIP"):
                with zipfile.ZipFile(store / zip_name) as z:
                    z.extractall(unpacked / zip_name[:-len(".zip")] if zip_name.endswith(".zip") else unpacked)
        # lite's deployment makes artifacts readable by the component's user (Permission: Read: ALL);
        # the collector process of ggdefender.Defender runs unprivileged and reads them
        for dirpath, dirnames, filenames in os.walk(self.root / "packages"):
            os.chmod(dirpath, 0o755)
            for f in filenames:
                os.chmod(os.path.join(dirpath, f), 0o644)

    def _ns_cmd(self, *argv: str, wd: Optional[Path] = None) -> list:
        return ["nsenter", "-t", str(self._ns.pid), "-m", "-n", f"--wd={wd or self.root}", *argv]

    def _in_cgroup(self, cgroup: Path, argv: list) -> list:
        """argv run from `cgroup` (a shell joins it, then execs argv: the pid stays the same)."""
        cgroup.mkdir(parents=True, exist_ok=True)
        return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(cgroup), *argv]

    def _start_daemon(self, name: str, argv: list) -> None:
        log = open(self.logs / f"{name}.log", "ab")
        try:
            # nsenter and stdbuf exec the command, so the pid is the daemon's; line-buffered, so a daemon's log
            # is whole when it is read or the daemon is stopped
            self._daemons[name] = subprocess.Popen(self._in_cgroup(self._daemon_cgroup,
                                                                  self._ns_cmd("stdbuf", "-oL", "-eL", *argv)),
                                                   stdout=log,
                                                   stderr=subprocess.STDOUT,
                                                   stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()

    def _in_ns_exists(self, path: str) -> bool:
        return subprocess.run(self._ns_cmd("test", "-S", path), timeout=10).returncode == 0

    def start(self) -> "LiteCore":
        check_host()
        self.base.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir()
        self._make_certs()
        self._write_config()
        self._deploy_files()
        reap_stale()
        self._ns = subprocess.Popen(self._in_cgroup(self._daemon_cgroup, [
            "unshare", "-m", "-n", "--propagation", "private", "sh", "-c",
            "mount -t tmpfs -o mode=755 tmpfs /run && mkdir -p /run/greengrass && ip link set lo up "
            "&& echo ready && exec sleep infinity"]),
            stdout=subprocess.PIPE, stderr=open(self.logs / "ns.log", "wb"), stdin=subprocess.DEVNULL,
            start_new_session=True, text=True)
        if self._ns.stdout.readline().strip() != "ready":
            self.stop()
            raise LiteUnavailable(f"cannot make private namespaces: {(self.logs / 'ns.log').read_text()}")
        try:
            self.start_broker()
            self._start_daemon("ggconfigd", [str(self.bin / "ggconfigd"), "-c", str(self.base / "config.yaml"),
                                             "-C", str(self.base / "config.d")])
            _wait(lambda: self._in_ns_exists("/run/greengrass/gg_config"), 30, "ggconfigd's socket")
            for name in ("ggpubsubd", "iotcored", "ggipcd"):
                self._start_daemon(name, [str(self.bin / name)])
            _wait(lambda: self.socket.exists(), 30, "ggipcd's socket")
            _wait(lambda: self._in_ns_exists("/run/greengrass/aws_iot_mqtt"), 30, "iotcored's socket")
            for c in self.components.values():
                if c.merge:
                    self.update_configuration(c.name, c.merge)
        except BaseException:
            self.stop()
            raise
        return self

    def start_broker(self) -> None:
        """(Re)start the stand-in for IoT Core: iotcored reconnects to it."""
        self._start_daemon("mosquitto", ["mosquitto", "-c", str(self.base / "mosquitto.conf")])

    def stop_broker(self) -> None:
        self._end(self._daemons.pop("mosquitto", None))

    @property
    def netns_pid(self) -> int:
        return self._ns.pid

    # -- components ------------------------------------------------------------------------------------------------
    def _cgroup(self, component: str) -> Path:
        return self.cgroups / f"ggl.{component}.service"

    def launch(self, component: str, phase: str, version: Optional[str] = None) -> Running:
        """Run one lifecycle phase with the real recipe-runner, from the component's cgroup."""
        version = version or self.components[component].version
        cgroup = self._cgroup(component)
        log = self.logs / f"{component}-{version}.{phase}.log"
        # a clean environment, as a systemd unit gets
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": os.path.expanduser("~"),
               "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT": str(self.socket), **self.env}
        argv = self._in_cgroup(cgroup, self._ns_cmd(str(self.bin / "recipe-runner"), "-n", component,
                                                    "-v", version, "-p", phase))
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        running = Running(component, phase, proc, log)
        self._phases.append(running)
        return running

    def install_and_run(self, component: str, install_timeout: float = 300) -> Running:
        """Lite's order for one component: the install phase to its end, then the run phase (not waited on)."""
        install = self.launch(component, "install")
        try:
            rc = install.proc.wait(install_timeout)
        except subprocess.TimeoutExpired:
            self._end(install.proc)
            raise TimeoutError(f"{component} install did not finish in {install_timeout} s:\n{install.output()}")
        if rc != 0:
            raise RuntimeError(f"{component} install failed (exit {rc}):\n{install.output()}")
        return self.launch(component, "run")

    def running(self, component: str) -> bool:
        """Whether the component's run phase (started by install_and_run) is still alive."""
        return any(r.component == component and r.phase == "run" and r.proc.poll() is None for r in self._phases)

    def log_path(self, component: str, phase: str = "run") -> Path:
        return self.logs / f"{component}-{self.components[component].version}.{phase}.log"

    def stop_component(self, component: str) -> None:
        """End every process of the component (its cgroup), as systemd stops a unit: SIGTERM, then SIGKILL."""
        for running in [r for r in self._phases if r.component == component]:
            self._end(running.proc)
            self._phases.remove(running)
        self._kill_cgroup(self._cgroup(component))

    def svcuid(self, component: str) -> str:
        """The component's IPC token (ggipcd keeps one per component for its whole life), got the way a
        component gets it: a recipe-runner phase of that component prints it."""
        if component not in self._svcuids:
            version = "0.0.0-svcuid"
            recipe = {"RecipeFormatVersion": "2020-01-25", "ComponentName": component, "ComponentVersion": version,
                      "Manifests": [{"Platform": {"os": "linux", "runtime": "*"},
                                     "Lifecycle": {"run": "echo SVCUID=$SVCUID"}}]}
            (self.root / "work" / component).mkdir(parents=True, exist_ok=True)
            path = self.root / "packages" / "recipes" / f"{component}-{version}.json"
            path.write_text(json.dumps(recipe))
            running = self.launch(component, "run", version=version)
            try:
                running.proc.wait(30)
            finally:
                self._phases.remove(running)
                path.unlink()
            lines = [x for x in running.output().splitlines() if x.startswith("SVCUID=")]
            if not lines or lines[-1] == "SVCUID=":
                raise RuntimeError(f"recipe-runner gave {component} no SVCUID:\n{running.output()}")
            self._svcuids[component] = lines[-1].split("=", 1)[1]
        return self._svcuids[component]

    def ipc_client(self, component: str):
        """An awsiotsdk IPC client authenticated as `component` (for writes a deployment would make)."""
        from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
        from awsiot.greengrasscoreipc import connect

        return GreengrassCoreIPCClientV2(client=connect(ipc_socket=str(self.socket),
                                                        authtoken=self.svcuid(component)))

    def update_configuration(self, component: str, merge: dict) -> None:
        """A typed MERGE into the component's configuration in ggconfigd (UpdateConfiguration under the
        component's identity: lite scopes configuration writes to the caller; it is the same ggconfigd write a
        deployment's configurationUpdate makes, and subscribers of the component are notified)."""
        client = self.ipc_client(component)
        try:
            client.update_configuration(key_path=[], value_to_merge=merge,
                                        timestamp=datetime.datetime.now(datetime.timezone.utc))
        finally:
            client.close()

    def daemon_log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- tear-down -------------------------------------------------------------------------------------------------
    @staticmethod
    def _end(proc: Optional[subprocess.Popen]) -> None:
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, STOP_WAIT), (signal.SIGKILL, STOP_WAIT)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    @staticmethod
    def _kill_cgroup(cgroup: Path) -> None:
        if not cgroup.exists():
            return
        kill = cgroup / "cgroup.kill"
        deadline = time.monotonic() + STOP_WAIT
        while time.monotonic() < deadline:
            pids = [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
            if not pids:
                break
            if kill.exists():
                kill.write_text("1")
            else:
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            time.sleep(0.05)
        try:
            cgroup.rmdir()
        except OSError:
            pass

    def leftovers(self) -> list:
        """What stop() did not end or remove (it should be nothing): live processes, cgroups."""
        left = [f"{what} (pid {p.pid})" for what, p in self._started if p.poll() is None]
        if self.cgroups.exists():
            left.append(f"cgroup {self.cgroups}")
        return left

    def stop(self) -> None:
        self._started = [(n, p) for n, p in self._daemons.items()]
        self._started += [(f"{r.component} {r.phase}", r.proc) for r in self._phases]
        if self._ns is not None:
            self._started.append(("namespace holder", self._ns))
        for name in list(self.components) + list(self._svcuids):
            self.stop_component(name)
        for running in self._phases:
            self._end(running.proc)
        self._phases.clear()
        for name in ("ggipcd", "iotcored", "ggpubsubd", "ggconfigd", "mosquitto"):
            self._end(self._daemons.pop(name, None))
        if self._ns is not None:
            self._end(self._ns)
            self._ns = None
        _remove_slice(self.cgroups)


