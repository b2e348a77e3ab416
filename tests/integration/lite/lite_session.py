"""The nucleus lite tests' session (tests/lite/harness.py): one lite instance with ggdefender.Defender as
`ggdefender build` makes it, the example plugin, and the probe component deployed and running, the offline
Device Defender and Jobs services answering on lite's broker, and an observer on that broker. conftest.py
makes the fixtures; the tests import their helpers from here (a module name of its own: every test folder has
a conftest)."""

import collections
import json
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
for folder in ("tests", "tests/integration", "tests/lite"):  # test helpers are modules, not packages
    if str(REPO / folder) not in sys.path:
        sys.path.insert(0, str(REPO / folder))

import harness  # noqa: E402
import ipc_check  # noqa: E402
from component_build import build_copy  # noqa: E402
from real_counterparts import unavailable  # noqa: E402

from ggdefender.local.cloud.bridge import BrokerCore  # noqa: E402
from ggdefender.local.cloud.services import close_services  # noqa: E402
from ggdefender.local.cloud.defender_service import DefenderService  # noqa: E402
from ggdefender.local.cloud.jobs_service import JobsService  # noqa: E402

HOW = ("build it with `bash tests/lite/build_lite.sh` (Debian: apt-get install cmake build-essential pkg-config "
       "libssl-dev libcurl4-openssl-dev uuid-dev libzip-dev libsqlite3-dev libyaml-dev libsystemd-dev "
       "libevent-dev liburiparser-dev mosquitto), as root, on a machine with cgroup2")
PROBE = Path(__file__).resolve().parent / "probe"
DEFENDER = "ggdefender.Defender"
PLUGIN = "ggdefender.ExamplePlugin"
IPC_CHECK = "ggdefender.IpcCheck"  # an identity with ipc_check's grants (no process: the tests connect as it)
INTERVAL = 2  # Collector.DevelopmentSampleIntervalSeconds for the tests

# what the tests merge over the component's configuration, as a deployment's configurationUpdate would
# Detect's profile: only the broker (8883, the one TCP listener in lite's network namespace) and the seed
# profile's ports may listen; a test's extra listener raises a violation
SEED_000 = REPO / "tests" / "unit" / "detect" / "fixtures" / "seed-000-listening-ports.json"


def _profile() -> dict:
    profile = json.loads(SEED_000.read_text())
    profile["behaviors"][0]["criteria"]["value"]["ports"].append(8883)
    return profile


DEFENDER_MERGE = {
    "Collector": {"DevelopmentSampleIntervalSeconds": str(INTERVAL), "StartJitterPercent": "0"},
    "Remediation": {"ReplyTimeoutSeconds": "3", "RetryInitialSeconds": "0.5"},
    "Detect": {"Profiles": [_profile()]},
}


class Observer:
    """Every message on lite's broker under the given filters (the test's own MQTT client, the device's cert)."""

    def __init__(self, broker: BrokerCore, filters=("$aws/#", "ggdefender/#")):
        self.broker = broker
        self.messages: collections.deque = collections.deque(maxlen=20000)
        self.changed = threading.Condition()
        for f in filters:
            broker.subscribe_iot(f, self._on)

    def _on(self, topic: str, payload: bytes, source: str) -> None:
        with self.changed:
            self.messages.append((time.time(), topic, payload))
            self.changed.notify_all()

    def wait_for(self, predicate, timeout: float, what: str):
        """The first message (at, topic, payload) after now... for which predicate holds; fails after timeout."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for message in list(self.messages):
                    if predicate(*message):
                        return message
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"no message on lite's broker within {timeout} s: {what}")
                self.changed.wait(min(left, 1.0))

    def since(self, at: float) -> list:
        with self.changed:
            return [m for m in self.messages if m[0] >= at]


class Lite:
    def __init__(self, core, cloud, observer, defender, jobs, base):
        self.core, self.cloud, self.observer, self.defender, self.jobs, self.base = \
            core, cloud, observer, defender, jobs, base
        self.thing = core.thing

    def update_defender_config(self, merge: dict) -> None:
        self.core.update_configuration(DEFENDER, merge)

    def probe_outcomes(self, timeout: float = 60) -> dict:
        """What the probe component's IPC calls got on lite (probe.py)."""
        return wait_for_outcomes(self.core.root / "work" / "ggdefender.LiteProbe" / "outcomes.json", timeout,
                                 lambda: self.component_log("ggdefender.LiteProbe"))

    def component_log(self, name: str) -> str:
        return self.core.log_path(name).read_text(errors="replace")


def built_lite() -> Path:
    """The folder of lite's daemons (built once per commit), or skip/fail saying how to get it."""
    try:
        return harness.build()
    except harness.LiteUnavailable as exc:
        unavailable("Greengrass nucleus lite", f"{exc}; {HOW}")


def running_lite(lite_bin: Path, tmp_path_factory):
    """Generator for the session fixture: yields a running `Lite`, stops everything after."""
    try:
        harness.check_host()
    except harness.LiteUnavailable as exc:
        unavailable("a machine that can run nucleus lite", f"{exc}; {HOW}")
    base = tmp_path_factory.mktemp("lite")
    project = base / "project"
    project.mkdir()
    built = build_copy(project)
    out = project / "greengrass-build"
    components = [
        harness.Component(built.recipe, out / "artifacts" / DEFENDER / built.version, DEFENDER_MERGE),
        harness.Component(out / "recipes" / f"{PLUGIN}-1.0.0.yaml", out / "artifacts" / PLUGIN / "1.0.0",
                          {"IntervalSeconds": "1"}),
        harness.Component(PROBE / "recipes" / "ggdefender.LiteProbe.yaml",
                          PROBE / "artifacts" / "ggdefender.LiteProbe" / "1.0.0"),
        harness.Component(_ipc_check_recipe(base)),
    ]
    # the interpreter of the tests already has the pinned requirements: the recipes' install steps use it
    # (their pre-provisioned-device path) instead of creating a venv from the network
    core = harness.LiteCore(lite_bin, base / "core", components, env={"GGDEFENDER_PYTHON": sys.executable})
    core.start()
    brokers, services = [], []
    try:
        def broker(name: str) -> BrokerCore:
            b = BrokerCore("127.0.0.1", 8883, core.thing, tls=core.client_tls(),
                           thread_setup=harness.join_netns(core.netns_pid), client_id=name).start()
            brokers.append(b)
            return b

        cloud = broker("ggdefender-tests-cloud")
        services.append(DefenderService(cloud, base / "cloud"))
        services.append(JobsService(cloud, base / "cloud"))
        observer = Observer(broker("ggdefender-tests-observer"))
        for name in (DEFENDER, PLUGIN, "ggdefender.LiteProbe"):
            core.install_and_run(name)
        yield Lite(core, cloud, observer, *services, base)
    finally:
        try:
            core.stop()
        finally:
            close_services(services)
            for b in brokers:
                b.stop()
        assert core.leftovers() == [], "the lite harness left these behind"


def _ipc_check_recipe(base: Path) -> Path:
    """The recipe of IPC_CHECK: ipc_check's configuration and grants, no lifecycle."""
    recipe = {"RecipeFormatVersion": "2020-01-25", "ComponentName": IPC_CHECK, "ComponentVersion": "1.0.0",
              "ComponentConfiguration": {"DefaultConfiguration": {
                  **ipc_check.CONFIG, "accessControl": ipc_check.policy(harness.THING)}},
              "Manifests": [{"Platform": {"os": "linux", "runtime": "*"}, "Lifecycle": {}}]}
    path = base / f"{IPC_CHECK}.json"
    path.write_text(json.dumps(recipe))
    return path


def wait_for_outcomes(path: Path, timeout: float, log) -> dict:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"the probe wrote no {path.name}:\n{log()}"
        time.sleep(0.2)
    return json.loads(path.read_text())


def report_of(topic: str, payload: bytes):
    """A Device Defender report published by the component (JSON or CBOR), else None."""
    if "/defender/metrics/" not in topic or topic.endswith(("/accepted", "/rejected")):
        return None
    if topic.endswith("/json"):
        return json.loads(payload)
    import cbor2
    return cbor2.loads(payload)
