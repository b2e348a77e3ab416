"""The health document (ggdefender.health): shape, bounds, coalesced publishing, and B's path allow-list."""

import json
import threading

import pytest

from ggdefender import health
from ggdefender import relay_wire
from ggdefender.collector import relay_client
from ggdefender.supervisor import relay_server

THING = "thingH"


class Recorder:
    """A's IPC as far as the publisher uses it; `gate` holds publishes back to show coalescing."""

    thing_name = THING

    def __init__(self):
        self.iot = []
        self.local = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail = 0

    def publish_iot(self, topic, payload, qos=1):
        self.gate.wait(30)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("IPC down")
        self.iot.append((topic, json.loads(payload), qos))

    def publish_local(self, topic, message):
        self.local.append((topic, message))


def _wait(cond, what):
    ev = threading.Event()
    for _ in range(1500):  # a bound for a loaded machine, not a speed claim
        if cond():
            return
        ev.wait(0.02)
    raise AssertionError(f"not reached: {what}")


def test_document_shape_and_status():
    h = health.Health()
    assert h.document()["status"] == "ok"
    h.set("configuration.Collector", {"accepted": True, "at": "t"})
    h.set("privilegeSeparation", {"on": True, "collectorUser": "nobody"})
    doc = h.document()
    assert doc["component"] == "ggdefender.Defender" and doc["updatedAt"].endswith("Z")
    assert doc["status"] == "ok" and doc["configuration"]["Collector"]["accepted"] is True
    h.set("configuration.Detect", {"accepted": False, "reason": "Detect.X: bad", "usingLastGood": True})
    assert h.document()["status"] == "degraded"
    assert health.problems(h.document()) == ["configuration Detect rejected: Detect.X: bad"]
    h.set("configuration.Detect", None)
    assert h.document()["status"] == "ok"


@pytest.mark.parametrize("path,value", [
    ("parts.collector", {"state": "restarting", "restarts": 2, "cause": "memory limit"}),
    ("outbox", {"pending": 3, "dropped": 1, "lastDropReason": "full"}),
    ("lastReport", {"status": "REJECTED", "reportId": 4, "at": "t", "reason": "bad"}),
    ("lastReport", {"status": "PUBLISH_FAILED", "reportId": 4, "at": "t"}),
    ("privilegeSeparation", {"on": False, "reason": "cannot read the interpreter"}),
])
def test_each_problem_makes_the_document_degraded(path, value):
    h = health.Health()
    h.set(path, value)
    assert h.document()["status"] == "degraded", path
    assert len(health.problems(h.document())) == 1


def test_removing_a_value_prunes_empty_parents():
    h = health.Health()
    h.set("parts.plugins.cpu", {"state": "running"})
    h.set("parts.plugins.cpu", None)
    assert "parts" not in h.document()


def test_value_size_is_bounded_and_report_never_raises():
    h = health.Health()
    h.set("outbox", {"pending": 1, "dropped": 0, "lastDropReason": "x" * 5000})
    assert h.get("outbox") == {"error": "health value too large"}
    h.set("outbox", {"bad": object()})
    assert "not serialisable" in h.get("outbox")["error"]

    class Exploding:
        def health(self, *a):
            raise OSError("boom")
    health.report(Exploding(), "outbox", {"pending": 0, "dropped": 0})  # no exception


def test_plugin_entries_are_bounded():
    h = health.Health()
    for i in range(health.MAX_PLUGIN_ENTRIES + 10):
        h.set(f"parts.plugins.p{i}", {"state": "running"})
    assert len(h.get("parts.plugins")) == health.MAX_PLUGIN_ENTRIES


def test_the_document_stays_inside_an_iot_core_message():
    h = health.Health()
    for i in range(health.MAX_PLUGIN_ENTRIES):
        h.set(f"parts.plugins.p{i}", {"state": "failing", "lastError": "x" * 3000})
    for section in health.SECTIONS:
        h.set(f"configuration.{section}", {"accepted": False, "reason": "r" * 3900})
    doc = h.document()
    assert len(json.dumps(doc, separators=(",", ":")).encode()) <= health.MAX_DOCUMENT_BYTES
    assert "64 parts.plugins entries left out" in doc["truncated"] and len(doc["configuration"]) == len(health.SECTIONS)


def test_publishes_at_start_and_coalesces_changes_the_last_state_always_published():
    ipc = Recorder()
    h = health.Health(min_interval=0.2)
    h.start(ipc)
    _wait(lambda: len(ipc.iot) == 1, "the start-up publish")
    assert ipc.iot[0][0] == f"ggdefender/things/{THING}/health" and ipc.iot[0][2] == 1
    assert ipc.local[0][0] == "ggdefender/health"
    ipc.gate.clear()  # the publisher is now blocked in (or before) its next publish
    for i in range(50):
        h.set("outbox", {"pending": i, "dropped": 0})
    ipc.gate.set()
    _wait(lambda: ipc.iot[-1][1].get("outbox", {}).get("pending") == 49, "the last state")
    h.stop()
    assert len(ipc.iot) <= 3  # 50 changes: the start-up document, at most one in flight, then the last state
    assert all(t == f"ggdefender/things/{THING}/health" for t, _, _ in ipc.iot)


def test_a_failed_publish_is_retried_with_the_latest_state():
    ipc = Recorder()
    ipc.fail = 1
    h = health.Health(min_interval=0.05)
    h.start(ipc)
    h.set("outbox", {"pending": 7, "dropped": 0})
    _wait(lambda: ipc.iot and ipc.iot[-1][1].get("outbox", {}).get("pending") == 7, "a retried publish")
    h.stop()


def test_check_from_part_allows_only_the_collector_process_paths():
    for ok in ("configuration.Collector", "configuration.Plugins", "configuration.Detect"):
        health.check_from_part(ok, {"accepted": False, "reason": "x", "usingLastGood": True, "at": "t"})
    health.check_from_part("outbox", {"pending": 1, "dropped": 2})
    health.check_from_part("lastReport", {"status": "ACCEPTED", "reportId": 1, "at": "t"})
    health.check_from_part("parts.plugins.cpu_usage", {"state": "failing", "errors": 3})
    health.check_from_part("outbox", None)
    for denied in ("privilegeSeparation", "parts.collector", "parts.remediation", "configuration.Remediation",
                   "configuration.Supervisor", "status", "thingName", "parts.plugins.", "parts.plugins.a/b"):
        with pytest.raises(PermissionError):
            health.check_from_part(denied, {"on": True})


@pytest.mark.parametrize("path,value", [
    ("configuration.Collector", {"reason": "no verdict"}),
    ("configuration.Collector", {"accepted": "yes"}),
    ("configuration.Collector", {"accepted": True, "extra": 1}),
    ("outbox", {"pending": True, "dropped": 0}),
    ("lastReport", {"status": "GREAT", "at": "t"}),
    ("parts.plugins.x", {"nested": {"a": 1}}),
    ("outbox", [1, 2]),
    ("outbox", {"pending": 1, "dropped": 0, "lastDropReason": "x" * 5000}),
])
def test_check_from_part_checks_the_shape(path, value):
    with pytest.raises(ValueError):
        health.check_from_part(path, value)


class FakeA:
    thing_name = THING

    def publish_iot(self, *a, **k):
        pass

    def publish_local(self, *a, **k):
        pass


def test_relay_carries_b_reports_to_a_and_refuses_a_paths(monkeypatch):
    doc = health.Health()
    monkeypatch.setattr(health, "process_health", lambda: doc)
    a, b = relay_wire.socket_pair()
    server = relay_server.RelayServer(a, FakeA(), THING).start()
    client = relay_client.RelayClient(b, timeout=30).connect()
    try:
        health.report(client, "configuration.Collector", {"accepted": False, "reason": "bad", "usingLastGood": True})
        assert doc.get("configuration.Collector")["usingLastGood"] is True
        with pytest.raises(relay_wire.RelayDenied):
            client.health("privilegeSeparation", {"on": True})
        with pytest.raises(relay_wire.RelayError, match="unknown key"):
            client.health("outbox", {"pending": 0, "dropped": 0, "evil": 1})
        health.report(client, "parts.collector", {"state": "running"})  # refused in A, never raised in B
        assert doc.get("privilegeSeparation") is None and doc.get("parts") is None
    finally:
        client.close()
        server.close()
        server.join(10)


def test_a_part_run_alone_under_a_core_publishes_its_own_document(monkeypatch):
    """Direct mode (`ggdefender part collector` with an `Ipc`, no relay): report() behaves as in process A."""
    from ggdefender.ipc import Ipc

    class DirectIpc(Ipc):
        thing_name = THING

        def __init__(self):
            super().__init__(client_factory=lambda: None)
            self.sent = []

        def publish_iot(self, topic, payload, qos=1):
            self.sent.append((topic, json.loads(payload)))

        def publish_local(self, topic, message):
            pass

    h = health.Health(min_interval=0.05)
    monkeypatch.setattr(health, "process_health", lambda: h)
    ipc = DirectIpc()
    try:
        health.report(ipc, "configuration.Collector", {"accepted": True, "at": "t"})
        _wait(lambda: any(d.get("configuration") for _, d in ipc.sent), "a publish in direct mode")
        assert ipc.sent[-1][0] == f"ggdefender/things/{THING}/health"
    finally:
        h.stop()
        ipc.close()


def test_a_fake_ipc_in_tests_is_never_published_to(monkeypatch):
    h = health.Health(min_interval=0.05)
    monkeypatch.setattr(health, "process_health", lambda: h)
    ipc = Recorder()
    health.report(ipc, "outbox", {"pending": 0, "dropped": 0})
    assert h.get("outbox") == {"pending": 0, "dropped": 0} and ipc.iot == [] and h._thread is None


def test_a_hostile_collector_process_cannot_write_process_a_entries(monkeypatch):
    """A real child process with the relay fd (as process B gets it) tries to clear A's warnings."""
    import os
    import subprocess
    import sys

    doc = health.Health()
    monkeypatch.setattr(health, "process_health", lambda: doc)
    doc.set("privilegeSeparation", {"on": False, "root": True, "reason": "collector runs as root"})
    a, b = relay_wire.socket_pair()
    server = relay_server.RelayServer(a, FakeA(), THING).start()
    code = (
        "from ggdefender.collector.relay_client import RelayClient\n"
        "from ggdefender.relay_wire import RelayDenied\n"
        "c = RelayClient.from_env().connect()\n"
        "out = []\n"
        "for path, value in [('privilegeSeparation', {'on': True}), ('parts.collector', {'state': 'running'}),\n"
        "                    ('configuration.Remediation', {'accepted': True}), ('status', {'x': 1})]:\n"
        "    try:\n"
        "        c.health(path, value)\n"
        "        out.append('allowed ' + path)\n"
        "    except RelayDenied:\n"
        "        out.append('denied ' + path)\n"
        "c.health('outbox', {'pending': 0, 'dropped': 0})\n"
        "print(';'.join(out))\n")
    try:
        proc = subprocess.run([sys.executable, "-c", code], pass_fds=[b.fileno()], capture_output=True, text=True,
                              timeout=60, env=dict(os.environ, GGDEFENDER_RELAY_FD=str(b.fileno())))
    finally:
        b.close()
    server.close()
    server.join(10)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().split(";") == ["denied privilegeSeparation", "denied parts.collector",
                                              "denied configuration.Remediation", "denied status"]
    assert doc.get("privilegeSeparation")["on"] is False and doc.get("parts") is None
    assert doc.get("outbox") == {"pending": 0, "dropped": 0}  # its own entry is accepted


def test_outbox_drops_degrade_the_document_for_a_day_then_only_the_count_remains():
    from ggdefender import health as H

    recent = {"outbox": {"pending": 0, "dropped": 2, "lastDropReason": "x", "at": H.now_iso()}}
    assert H.status_of(recent) == "degraded" and "outbox dropped 2" in H.problems(recent)[0]
    old = {"outbox": {"pending": 0, "dropped": 2, "lastDropReason": "x", "at": "2026-01-01T00:00:00.000Z"}}
    assert H.status_of(old) == "ok"
    unknown_time = {"outbox": {"pending": 0, "dropped": 1}}
    assert H.status_of(unknown_time) == "degraded"


def test_an_iot_core_refusal_still_publishes_locally_and_is_said_once(caplog):
    # nucleus lite refuses PublishToIoTCore at once while it has no IoT Core connection
    ipc = Recorder()
    ipc.fail = 3
    caplog.set_level("INFO", logger="ggdefender.health")
    h = health.Health(min_interval=0.01)
    h.start(ipc)
    try:
        _wait(lambda: ipc.local, "the local document despite the IoT Core refusal")
        h.set("outbox", {"pending": 3, "dropped": 0})
        _wait(lambda: ipc.iot and ipc.iot[-1][1].get("outbox", {}).get("pending") == 3, "IoT Core once it works")
    finally:
        h.stop()
    failed = [r.getMessage() for r in caplog.records if "health: publish failed" in r.getMessage()]
    assert len(failed) == 1 and "IoT Core: IPC down" in failed[0]
    assert any("published again" in r.getMessage() for r in caplog.records)
