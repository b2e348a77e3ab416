"""The offline IoT Jobs service (local/cloud/jobs_service.py) against a recording fake core: API semantics and errors."""

import json

import pytest

from ggdefender.local.cloud.jobs_service import JobsError, JobsService

T = "thing-1"
P = f"$aws/things/{T}/jobs/"
DOC = {"schema": "ggdefender.remediation/1", "steps": [{"operation": "collect-now"}]}


class FakeCore:
    thing_name = T

    def __init__(self):
        self.sent = []
        self.subs = []

    def subscribe_iot(self, topic_filter, callback):
        self.subs.append((topic_filter, callback))
        return lambda: None

    def publish_iot(self, topic, payload, *, source="cloud", qos=1):
        self.sent.append((topic, json.loads(payload)))

    def device(self, topic, payload):
        """A device publishes a request (what Core routes to the cloud listener)."""
        self.sent.clear()
        # every request filter is served by the same handler; the service routes on the topic itself
        self.subs[0][1](topic, json.dumps(payload).encode(), "ggdefender.Defender")
        return dict(self.sent)


@pytest.fixture
def svc(tmp_path):
    core = FakeCore()
    service = JobsService(core, tmp_path, None, tick_seconds=0.05)
    yield service
    service.close()


def reply(svc, topic, payload):
    return svc.core.device(topic, payload)


def test_create_queues_and_notifies(svc):
    svc.create_job(DOC, "j1")
    topics = [t for t, _ in svc.core.sent]
    assert topics == [P + "notify", P + "notify-next"]
    notify = dict(svc.core.sent)[P + "notify"]
    assert notify["jobs"]["QUEUED"][0]["jobId"] == "j1"
    assert dict(svc.core.sent)[P + "notify-next"]["execution"]["jobDocument"] == DOC
    svc.core.sent.clear()
    svc.create_job(DOC, "j2")  # queued behind j1: the head did not change, so no notify-next
    assert [t for t, _ in svc.core.sent] == [P + "notify"]


def test_describe_next_claim_with_version_and_finish(svc):
    svc.create_job(DOC, "j1")
    out = reply(svc, P + "$next/get", {"clientToken": "a"})
    ex = out[P + "$next/get/accepted"]["execution"]
    assert ex["status"] == "QUEUED" and out[P + "$next/get/accepted"]["clientToken"] == "a"
    out = reply(svc, P + "j1/update", {"status": "IN_PROGRESS", "expectedVersion": ex["versionNumber"],
                                       "includeJobExecutionState": True, "clientToken": "b"})
    state = out[P + "j1/update/accepted"]["executionState"]
    assert state["status"] == "IN_PROGRESS" and state["versionNumber"] == ex["versionNumber"] + 1
    # a stale version is refused with the current state
    out = reply(svc, P + "j1/update", {"status": "SUCCEEDED", "expectedVersion": ex["versionNumber"]})
    rej = out[P + "j1/update/rejected"]
    assert rej["code"] == "VersionMismatch" and rej["executionState"]["versionNumber"] == state["versionNumber"]
    out = reply(svc, P + "j1/update", {"status": "SUCCEEDED", "expectedVersion": state["versionNumber"],
                                       "statusDetails": {"summary": "done"}})
    assert P + "j1/update/accepted" in out and P + "notify" in out and P + "notify-next" in out
    assert svc.describe("j1")["executions"][0]["statusDetails"] == {"summary": "done"}
    # nothing after a terminal state
    out = reply(svc, P + "j1/update", {"status": "IN_PROGRESS"})
    assert out[P + "j1/update/rejected"]["code"] == "InvalidStateTransition"
    out = reply(svc, P + "j1/get", {})
    assert out[P + "j1/get/rejected"]["code"] == "TerminalStateReached"


@pytest.mark.parametrize("payload, code", [
    ({"status": "TIMED_OUT"}, "InvalidRequest"),
    ({"status": "CANCELED"}, "InvalidRequest"),
    ({}, "InvalidRequest"),
    ({"status": "IN_PROGRESS", "statusDetails": {"bad key": "v"}}, "InvalidRequest"),
    ({"status": "IN_PROGRESS", "statusDetails": {"k": ""}}, "InvalidRequest"),
    ({"status": "IN_PROGRESS", "statusDetails": {"k": "x" * 1025}}, "InvalidRequest"),
    ({"status": "IN_PROGRESS", "statusDetails": {"k": "a\x01b"}}, "InvalidRequest"),
    ({"status": "SUCCEEDED"}, "InvalidStateTransition"),  # QUEUED -> SUCCEEDED
])
def test_update_validation(svc, payload, code):
    svc.create_job(DOC, "j1")
    out = reply(svc, P + "j1/update", payload)
    assert out[P + "j1/update/rejected"]["code"] == code


def test_unknown_job_and_bad_json(svc):
    out = reply(svc, P + "nope/update", {"status": "IN_PROGRESS"})
    assert out[P + "nope/update/rejected"]["code"] == "ResourceNotFound"
    svc.core.sent.clear()
    svc.core.subs[0][1](P + "get", b"{not json", "dev")
    assert dict(svc.core.sent)[P + "get/rejected"]["code"] == "InvalidJson"


def test_start_next_claims_and_returns_in_progress_again(svc):
    svc.create_job(DOC, "j1")
    first = reply(svc, P + "start-next", {"statusDetails": {"stage": "claimed"}})[P + "start-next/accepted"]
    assert first["execution"]["status"] == "IN_PROGRESS"
    again = reply(svc, P + "start-next", {"statusDetails": {"stage": "other"}})[P + "start-next/accepted"]
    assert again["execution"]["jobId"] == "j1" and again["execution"]["statusDetails"] == {"stage": "claimed"}
    pending = reply(svc, P + "get", {})[P + "get/accepted"]
    assert [j["jobId"] for j in pending["inProgressJobs"]] == ["j1"] and pending["queuedJobs"] == []


def test_failed_attempt_is_retried_with_a_new_execution_number(svc):
    svc.create_job(DOC, "j1", max_retries=1)
    reply(svc, P + "start-next", {})
    reply(svc, P + "j1/update", {"status": "FAILED", "statusDetails": {"reason": "busy"}})
    assert [e["status"] for e in svc.describe("j1")["executions"]] == ["FAILED", "QUEUED"]
    ex = reply(svc, P + "start-next", {})[P + "start-next/accepted"]["execution"]
    assert ex["executionNumber"] == 2
    reply(svc, P + "j1/update", {"status": "REJECTED", "statusDetails": {"reason": "never"}})
    assert [e["status"] for e in svc.describe("j1")["executions"]] == ["FAILED", "REJECTED"]


def test_in_progress_timeout(svc):
    svc.create_job(DOC, "j1", timeout_minutes=0.001)
    reply(svc, P + "start-next", {})
    done = svc.wait_for("j1", "TIMED_OUT", timeout=30)
    assert done["status"] == "TIMED_OUT"


def test_cancel_queued_and_forced(svc):
    svc.create_job(DOC, "j1")
    assert svc.cancel("j1")["executionStatus"] == "CANCELED"
    svc.create_job(DOC, "j2")
    reply(svc, P + "start-next", {})
    with pytest.raises(JobsError, match="force"):
        svc.cancel("j2")
    svc.cancel("j2", force=True)
    out = reply(svc, P + "j2/update", {"status": "SUCCEEDED"})
    assert out[P + "j2/update/rejected"]["code"] == "InvalidStateTransition"


def test_create_validation(svc):
    with pytest.raises(JobsError, match="32768"):
        svc.create_job({"x": "y" * 40000})
    with pytest.raises(JobsError, match="JSON object"):
        svc.create_job([1, 2])
    with pytest.raises(JobsError, match="job id"):
        svc.create_job(DOC, "bad/id")
    svc.create_job(DOC, "same")
    with pytest.raises(JobsError, match="exists"):
        svc.create_job(DOC, "same")


def test_state_survives_a_restart(tmp_path):
    core = FakeCore()
    first = JobsService(core, tmp_path, None)
    first.create_job(DOC, "j1")
    first.close()
    second = JobsService(FakeCore(), tmp_path, None)
    try:
        assert [j["jobId"] for j in second.list_jobs()] == ["j1"]
    finally:
        second.close()


def test_namespaced_topics_are_not_served(svc):
    from ggdefender.local.nucleus.core import topic_matches
    ns = P + "$next/namespace-aws-gg-deployment/get"
    assert not any(topic_matches(f, ns) for f, _ in svc.core.subs)
