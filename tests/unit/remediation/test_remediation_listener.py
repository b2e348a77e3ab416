"""The listener wiring, in-process: a fake Ipc looped to the offline Jobs service (no sockets, no processes)."""

import json
import logging
import threading

import pytest

from ggdefender.local.nucleus.core import topic_matches
from ggdefender.local.cloud.jobs_service import JobsService
from ggdefender.remediation.listener import JOURNAL_FILE, RemediationListener

T = "thing-1"
OURS = "ggdefender.remediation/1"


class Sub:
    def __init__(self, owner, kind, topic, handler):
        self.owner, self.kind, self.topic, self.handler = owner, kind, topic, handler

    def close(self):
        self.owner.subs.remove(self)


class LoopedIpc:
    """Ipc's interface; IoT Core traffic goes to/from a JobsService as the local core would route it."""

    thing_name = T

    def __init__(self, remediation: dict):
        self.remediation = remediation
        self.subs = []
        self.cloud = []
        self.local_out = []
        self.thing_name = T

    # the service's side of the fake core
    def subscribe_iot_cloud(self, topic_filter, callback):
        self.cloud.append((topic_filter, callback))
        return lambda: None

    def deliver_from_cloud(self, topic, payload):
        for sub in list(self.subs):
            if sub.kind == "iot" and topic_matches(sub.topic, topic):
                sub.handler(topic, payload)

    # the component's side (ggdefender.ipc.Ipc)
    def get_config(self, key_path=None, component=None):
        return self.remediation

    def subscribe_iot(self, topic_filter, handler, qos=1):
        sub = Sub(self, "iot", topic_filter, handler)
        self.subs.append(sub)
        return sub

    def subscribe_local(self, topic, handler):
        sub = Sub(self, "local", topic, handler)
        self.subs.append(sub)
        return sub

    def subscribe_config(self, handler, component=None):
        sub = Sub(self, "config", "", handler)
        self.subs.append(sub)
        return sub

    def publish_iot(self, topic, payload, qos=1):
        data = payload.encode() if isinstance(payload, str) else payload
        for topic_filter, callback in list(self.cloud):
            if topic_matches(topic_filter, topic):
                callback(topic, data, "ggdefender.Defender")

    def publish_local(self, topic, message):
        self.local_out.append((topic, message))
        for sub in list(self.subs):
            if sub.kind == "local" and sub.topic == topic:
                sub.handler(topic, message)


class FakeCore:
    thing_name = T

    def __init__(self, ipc):
        self.ipc = ipc

    def subscribe_iot(self, topic_filter, callback):
        return self.ipc.subscribe_iot_cloud(topic_filter, callback)

    def publish_iot(self, topic, payload, *, source="cloud", qos=1):
        self.ipc.deliver_from_cloud(topic, payload)


@pytest.fixture
def running(tmp_path):
    started = []

    def start(remediation):
        ipc = LoopedIpc(remediation)
        service = JobsService(FakeCore(ipc), tmp_path / "cloud", None)
        stop = threading.Event()
        listener = RemediationListener(ipc, T, tmp_path / "state")
        thread = threading.Thread(target=listener.run, args=(stop,), daemon=True)
        thread.start()
        started.append((stop, thread, service))
        return ipc, service

    yield start
    for stop, thread, service in started:
        stop.set()
        thread.join(10)
        service.close()


def test_invalid_configuration_rejects_jobs_with_the_reason(running):
    ipc, service = running({"AllowRunCommand": True})  # no RunCommandExecutables: invalid
    service.create_job({"schema": OURS, "steps": [{"operation": "collect-now"}]}, "j1")
    done = service.wait_for("j1", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=30)
    assert done["status"] == "REJECTED"
    assert "RunCommandExecutables" in done["statusDetails"]["reason"]


def test_disallowed_operation_is_rejected_and_journal_persisted(running, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ggdefender.audit")
    ipc, service = running({"AllowedOperations": ["collect-now"], "ReplyTimeoutSeconds": "1"})
    service.create_job({"schema": OURS, "steps": [{"operation": "stop-listener", "arguments": {"port": 9}}]}, "j2")
    done = service.wait_for("j2", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=30)
    assert done["status"] == "REJECTED" and "not allowed on this device" in done["statusDetails"]["reason"]
    audits = [json.loads(r.getMessage()[len("AUDIT "):]) for r in caplog.records if r.name == "ggdefender.audit"]
    assert [(a["job"], a["operation"], a["result"]) for a in audits] == [("j2#1", "document", "REJECTED")]
    assert "not allowed on this device" in audits[0]["detail"]
    journal = json.loads((tmp_path / "state" / JOURNAL_FILE).read_text())
    assert journal["entries"]["j2#1"]["status"] == "REJECTED"
    assert oct((tmp_path / "state" / JOURNAL_FILE).stat().st_mode & 0o777) == "0o600"


def _wait_subscribed(ipc):
    for _ in range(600):  # until the listener has subscribed (it starts on its own thread)
        if any(s.kind == "config" for s in list(ipc.subs)):
            return
        threading.Event().wait(0.05)
    raise AssertionError("the listener never subscribed")


def test_the_listener_has_no_public_request_door(running):
    """Local pub/sub carries no sender identity: the listener does not listen for requests on it at all."""
    ipc, service = running({})
    _wait_subscribed(ipc)
    assert not [s.topic for s in ipc.subs if s.kind == "local"]
    ipc.publish_local("ggdefender/remediation/requests", {"requestId": "x", "operation": "kill-process",
                                                          "arguments": {"pid": 1, "signal": "SIGKILL"}})
    assert ipc.local_out == [("ggdefender/remediation/requests", ipc.local_out[0][1])]  # nobody answered


def test_accept_local_requests_true_is_refused_by_the_parser():
    from ggdefender.remediation import config as rconfig
    from ggdefender.settings import ConfigError

    with pytest.raises(ConfigError, match="local pub/sub carries no sender identity; third parties use IoT Jobs"):
        rconfig.parse({"AcceptLocalRequests": True})
    with pytest.raises(ConfigError, match="AcceptLocalRequests"):
        rconfig.parse({"AcceptLocalRequests": "true"})
    rconfig.parse({"AcceptLocalRequests": False})  # the old way to close the door stays valid


def test_submit_mitigation_takes_the_executor_path_and_reports_back(tmp_path):
    ipc = LoopedIpc({})
    listener = RemediationListener(ipc, T, tmp_path / "state")
    got, done = [], threading.Event()
    msg = {"requestId": "d-1", "operation": "stop-listener", "arguments": {"port": 9, "protocol": "tcp"},
           "reason": "P/b in alarm", "violationId": "v-1"}
    assert "not running" in listener.submit_mitigation(msg, got.append)
    stop = threading.Event()
    thread = threading.Thread(target=listener.run, args=(stop,), daemon=True)
    thread.start()
    try:
        for _ in range(600):
            why = listener.submit_mitigation(msg, lambda r: (got.append(r), done.set()))
            if why is None:
                break
            threading.Event().wait(0.05)
        assert done.wait(30)
        (result,) = got
        assert result["requestId"] == "d-1" and result["violationId"] == "v-1"
        assert result["status"] == "SUCCEEDED" and "nothing listens" in result["statusDetails"]["summary"]
        # also published, for observers only
        assert ("ggdefender/remediation/results", result) in ipc.local_out
        # arguments are validated like a job's, whoever built them
        done.clear()
        got.clear()
        assert listener.submit_mitigation(dict(msg, requestId="d-2", arguments={"port": 9, "pid": 1}),
                                          lambda r: (got.append(r), done.set())) is None
        assert done.wait(30) and got[0]["status"] == "REJECTED"
    finally:
        stop.set()
        thread.join(10)


def test_dry_run_job_succeeds_without_acting(running):
    ipc, service = running({})
    service.create_job({"schema": OURS, "dryRun": True,
                        "steps": [{"operation": "restart-component"}]}, "j3")
    done = service.wait_for("j3", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=30)
    assert done["status"] == "SUCCEEDED" and "would restart ggdefender.Defender" in done["statusDetails"]["summary"]
