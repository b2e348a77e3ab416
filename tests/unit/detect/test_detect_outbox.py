"""Detect's outbox: one poisoned item never blocks later ones, transient failures keep order, every drop is
counted, persisted and reported (issue 10, item 6)."""

import json
import logging

import pytest

from ggdefender import health
from ggdefender.detect import outbox as O
from ggdefender.detect.service import DetectService
from ggdefender.ipc import IOT_CORE_MAX_PAYLOAD, IpcUnavailable
from ggdefender.relay_wire import RelayDenied, RelayError, RelayPublishRefused, RelayTimeout

from detect_helpers import FIXTURES, FakeIpc, report

SEED_000 = f"{FIXTURES}/seed-000-listening-ports.json"
VIOLATIONS = "ggdefender/things/gw/violations"


def _v(vid, **extra):
    return dict({"violationId": vid, "violationEventType": "in-alarm"}, **extra)


class Publisher:
    """publish(kind, payload) that refuses items whose violationId is in `refuse` and fails everything while
    `down` is set."""

    def __init__(self, refuse=(), error=RelayDenied("relay policy: not allowed")):
        self.sent = []
        self.refuse = set(refuse)
        self.error = error
        self.down = None

    def __call__(self, kind, payload):
        if self.down is not None:
            raise self.down
        if payload.get("violationId") in self.refuse:
            raise self.error
        self.sent.append(payload["violationId"])


@pytest.mark.parametrize("error", [RelayDenied("relay policy: denied"), PermissionError("no"),
                                   ValueError("200000 bytes, over the IoT Core limit"),
                                   RelayError("invalid 'publish_iot' request: 'b64' is not valid base64"),
                                   RelayError("UnauthorizedError: Not Authorized")])
def test_a_permanently_refused_item_is_dropped_after_bounded_tries_and_never_blocks_later_ones(caplog, error):
    box = O.Outbox()
    pub = Publisher(refuse={"poison"}, error=error)
    box.append(("violation", _v("poison")))
    box.append(("violation", _v("v1")))
    assert box.flush(pub) == (1, True)
    assert pub.sent == ["v1"] and len(box) == 1          # v1 did not wait behind the poisoned item
    box.append(("violation", _v("v2")))
    for _ in range(O.MAX_TRIES - 1):
        box.flush(pub)
    assert pub.sent == ["v1", "v2"] and len(box) == 0
    assert box.dropped == 1 and "poison" in box.last_drop_reason
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "violation poison (in-alarm)" in errors[0] and "dropped" in errors[0]


@pytest.mark.parametrize("error", [IpcUnavailable("relay to the supervisor lost"), ConnectionError("closed"),
                                   TimeoutError("slow"),
                                   RelayTimeout("no reply from the supervisor within 120s (publish_iot)"),
                                   RelayPublishRefused("PublishToIoTCore on t refused by the nucleus: ServiceError")])
def test_a_transient_failure_keeps_order_and_stops_the_flush_without_counting(error):
    box = O.Outbox()
    pub = Publisher()
    for vid in ("a", "b", "c"):
        box.append(("violation", _v(vid)))
    pub.down = error
    for _ in range(O.MAX_TRIES * 3):
        assert box.flush(pub) == (0, False)
    assert [p["violationId"] for _, p in box] == ["a", "b", "c"] and box.dropped == 0
    pub.down = None
    assert box.flush(pub) == (3, True) and pub.sent == ["a", "b", "c"]


def test_a_transient_failure_after_a_refused_item_keeps_the_rest_in_order():
    box = O.Outbox()
    pub = Publisher(refuse={"poison"})
    for vid in ("poison", "a", "b"):
        box.append(("violation", _v(vid)))

    def flaky(kind, payload):  # refuse the poison, then IPC goes away before "b"
        if payload["violationId"] == "b":
            raise IpcUnavailable("gone")
        pub(kind, payload)

    box.flush(flaky)
    assert pub.sent == ["a"] and [p["violationId"] for _, p in box] == ["poison", "b"]


def test_a_full_outbox_drops_the_oldest_with_an_error_and_counts_it(caplog):
    box = O.Outbox(maxlen=3)
    for i in range(5):
        box.append(("finding", {"Id": f"f{i}"}))
    assert [p["Id"] for _, p in box] == ["f2", "f3", "f4"]
    assert box.dropped == 2 and "outbox full" in box.last_drop_reason and "f1" in box.last_drop_reason
    assert sum("finding f0" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records) == 1
    assert box.status() == {"pending": 3, "dropped": 2, "lastDropReason": box.last_drop_reason,
                            "at": box.last_drop_at}


def test_unknown_kinds_are_refused():
    with pytest.raises(ValueError):
        O.Outbox().append(("tweet", {}))


def test_tries_and_drops_survive_a_restart(tmp_path):
    ipc = RefusingIpc(refuse={"v-poison"})
    svc = DetectService(ipc, "gw", str(tmp_path))
    svc.store.outbox.append(("violation", _v("v-poison")))
    svc.store.outbox.append(("violation", _v("v-ok")))
    svc._flush()
    svc.close()
    again = DetectService(ipc, "gw", str(tmp_path))
    assert [(p["violationId"], n) for _, p, n in again.store.outbox._items] == [("v-poison", 1)]
    for _ in range(O.MAX_TRIES - 1):
        again._flush()
    again.close()
    third = DetectService(ipc, "gw", str(tmp_path))
    assert len(third.store.outbox) == 0 and third.store.outbox.dropped == 1
    assert third.status()["outbox"]["dropped"] == 1


class RefusingIpc(FakeIpc):
    """The relay refuses IoT Core publishes of the violations in `refuse` (as A's policy would)."""

    def __init__(self, refuse=()):
        super().__init__()
        self.refuse = set(refuse)

    def publish_iot(self, topic, payload, qos=1):
        if json.loads(payload).get("violationId") in self.refuse:
            raise RelayDenied(f"relay policy: publish_iot on topic {topic!r} is not allowed")
        super().publish_iot(topic, payload, qos)


def test_detect_service_publishes_later_violations_past_a_poisoned_one_and_reports_drops(tmp_path):
    ipc = RefusingIpc(refuse={"poison"})
    svc = DetectService(ipc, "gw", str(tmp_path))
    svc.reconfigure({"Profiles": [SEED_000]})
    svc.store.outbox.append(("violation", _v("poison")))
    huge = _v("huge", detail="x" * IOT_CORE_MAX_PAYLOAD)  # too large for any core: refused before sending
    svc.store.outbox.append(("violation", huge))
    svc.observe(report(1, ports=[22]), 1000.0)
    (e,) = svc.observe(report(2, ports=[22, 8888]), 1005.0)
    assert [m["violationId"] for m in ipc.on(VIOLATIONS)] == [e["violationId"]]  # not held back
    for i in range(O.MAX_TRIES):
        svc.observe(report(3 + i, ports=[22, 8888]), 1010.0 + 5 * i)
    status = svc.status()["outbox"]
    assert status["pending"] == 0 and status["dropped"] == 2
    assert health.process_health().get("outbox") == status   # the health document says so
    assert [m["violationId"] for m in ipc.on(VIOLATIONS)].count("poison") == 0


def test_the_outbox_is_reported_to_health_only_when_it_changes(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(health, "report", lambda ipc, path, value: calls.append((path, value)))
    svc = DetectService(FakeIpc(), "gw", str(tmp_path))
    svc.reconfigure({"Profiles": [SEED_000]})
    for i in range(5):
        svc.observe(report(i + 1, ports=[22]), 1000.0 + 5 * i)
    assert calls == [("outbox", {"pending": 0, "dropped": 0})]


def test_a_refused_local_copy_never_sends_the_item_to_iot_core_again(tmp_path, caplog):
    ipc = FakeIpc()
    ipc.failing["publish_local"] = RelayError("ServiceError: ")  # nucleus lite: a local JSON of > 255 values
    svc = DetectService(ipc, "gw", str(tmp_path))
    svc.reconfigure({"Profiles": [SEED_000]})
    svc.observe(report(1, ports=[22]), 1000.0)
    (e,) = svc.observe(report(2, ports=[22, 8888]), 1005.0)
    for i in range(O.MAX_TRIES + 1):
        svc.observe(report(3 + i, ports=[22, 8888]), 1010.0 + 5 * i)
    assert [m["violationId"] for m in ipc.on(VIOLATIONS)] == [e["violationId"]]  # once, not once per try
    assert svc.status()["outbox"]["pending"] == 0 and svc.status()["outbox"]["dropped"] == 0
    said = [r.getMessage() for r in caplog.records if "local copy on ggdefender/violations" in r.getMessage()]
    assert len(said) == 1
