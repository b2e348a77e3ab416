"""The IoT Jobs state machine (pure): messages in, actions out, with fixture payloads."""

import itertools
import json

import pytest

from ggdefender.remediation import jobs
from ggdefender.remediation.jobs import Execute, JobsMachine, Journal, Publish, SaveJournal

T = "thing-1"
P = f"$aws/things/{T}/jobs/"
DOC = {"schema": "ggdefender.remediation/1", "steps": [{"operation": "collect-now"}]}


def machine(**kw) -> JobsMachine:
    counter = itertools.count(1)
    return JobsMachine(T, kw.pop("journal", None) or Journal(), token_factory=lambda: f"tok{next(counter)}", **kw)


def publishes(actions):
    return [a for a in actions if isinstance(a, Publish)]


def executes(actions):
    return [a for a in actions if isinstance(a, Execute)]


def msg(payload) -> bytes:
    return json.dumps(payload).encode()


def execution(status="QUEUED", job="job-1", number=1, version=1, doc=DOC):
    return {"jobId": job, "thingName": T, "status": status, "executionNumber": number, "versionNumber": version,
            "jobDocument": doc, "queuedAt": 1, "lastUpdatedAt": 1}


def claim_and_run(m, job="job-1", number=1, now=0.0):
    """Drive a QUEUED execution through $next/get and the claim; returns the Execute action."""
    look = publishes(m.start(now))[0]
    assert look.topic == P + "$next/get"
    acts = m.on_message(P + "$next/get/accepted",
                        msg({"execution": execution(job=job, number=number), "clientToken": look.payload["clientToken"]}),
                        now)
    claim = publishes(acts)[0]
    assert claim.topic == P + f"{job}/update"
    assert claim.payload["status"] == "IN_PROGRESS" and claim.payload["expectedVersion"] == 1
    acts = m.on_message(P + f"{job}/update/accepted",
                        msg({"executionState": {"status": "IN_PROGRESS", "versionNumber": 2},
                             "clientToken": claim.payload["clientToken"]}), now)
    [ex] = executes(acts)
    return ex


def test_subscription_filters_are_exact_and_never_namespaced():
    filters = jobs.subscription_filters(T)
    assert all("#" not in f for f in filters)
    assert P + "+/update/+" in filters and P + "notify-next" in filters
    # one `+` level cannot reach the Greengrass deployment namespace's extra level
    from ggdefender.local.nucleus.core import topic_matches  # noqa: F401 - only to prove the claim below with MQTT rules
    ns_topic = P + "$next/namespace-aws-gg-deployment/get/accepted"
    assert not any(topic_matches(f, ns_topic) for f in filters)


def test_invalid_thing_name_is_refused():
    with pytest.raises(ValueError):
        jobs.subscription_filters("a/b")


def test_claim_execute_report_and_look_again():
    m = machine()
    ex = claim_and_run(m)
    assert (ex.job_id, ex.execution_number, ex.document) == ("job-1", 1, DOC)
    assert m.journal.get("job-1", 1)["state"] == "running"
    acts = m.on_execution_done("job-1", 1, "SUCCEEDED", {"summary": "ok", "port": "8888"}, 1.0)
    [final] = publishes(acts)
    assert final.payload["status"] == "SUCCEEDED" and final.payload["expectedVersion"] == 2
    assert final.payload["statusDetails"] == {"summary": "ok", "port": "8888"}
    acts = m.on_message(P + "job-1/update/accepted", msg({"clientToken": final.payload["clientToken"]}), 1.0)
    assert m.journal.get("job-1", 1)["state"] == "acknowledged"
    assert [p.topic for p in publishes(acts)] == [P + "$next/get"]  # never leave the next job QUEUED


def test_start_next_mode_uses_start_next_and_runs_directly():
    m = machine(claim_mode="start-next")
    look = publishes(m.start(0))[0]
    assert look.topic == P + "start-next"
    acts = m.on_message(P + "start-next/accepted",
                        msg({"execution": execution("IN_PROGRESS", version=2), "clientToken": look.payload["clientToken"]}), 0)
    assert executes(acts) and not publishes(acts)


def test_notifications_while_busy_never_start_a_second_execution():
    m = machine()
    claim_and_run(m)
    probes = []
    for _ in range(5):
        acts = m.on_message(P + "notify-next", msg({"execution": execution("QUEUED", job="job-2")}), 0.5)
        acts += m.on_message(P + "notify", msg({"jobs": {"QUEUED": [{"jobId": "job-2"}]}}), 0.5)
        assert not executes(acts)
        probes += publishes(acts)
    # the only request is one check that the running execution is still ours (never a second job)
    assert [p.topic for p in probes] == [P + "job-1/get"]
    acts = m.on_message(P + "job-1/get/accepted", msg({"execution": {"status": "IN_PROGRESS", "versionNumber": 2},
                                                       "clientToken": probes[0].payload["clientToken"]}), 0.6)
    assert acts == []
    acts = m.on_execution_done("job-1", 1, "FAILED", {"reason": "x"}, 1)
    final = publishes(acts)[0]
    acts = m.on_message(P + "job-1/update/accepted", msg({"clientToken": final.payload["clientToken"]}), 1)
    assert [p.topic for p in publishes(acts)] == [P + "$next/get"]


def test_duplicate_execution_is_not_run_twice_but_its_result_is_resent():
    m = machine()
    claim_and_run(m)
    m.on_execution_done("job-1", 1, "SUCCEEDED", {"summary": "done"}, 1)
    final = m.pending["payload"]
    m.on_message(P + "job-1/update/accepted", msg({"clientToken": final["clientToken"]}), 1)
    # the same execution shows up again (a duplicate delivery): report the recorded result, never re-run
    look = m.pending
    acts = m.on_message(P + "$next/get/accepted",
                        msg({"execution": execution("IN_PROGRESS", version=3), "clientToken": look["token"]}), 2)
    assert not executes(acts)
    [again] = publishes(acts)
    assert again.payload["status"] == "SUCCEEDED" and again.payload["statusDetails"] == {"summary": "done"}


def test_stale_replies_with_other_tokens_are_ignored():
    m = machine()
    m.start(0)
    acts = m.on_message(P + "$next/get/accepted", msg({"execution": execution(), "clientToken": "someone-else"}), 0)
    assert acts == [] and m.state == "looking"


def test_other_things_and_bad_job_ids_are_ignored():
    m = machine()
    look = m.start(0)[0]
    assert m.on_message("$aws/things/other/jobs/notify-next", msg({"execution": execution()}), 0) == []
    bad = execution(job="../x")
    acts = m.on_message(P + "$next/get/accepted", msg({"execution": bad, "clientToken": look.payload["clientToken"]}), 0)
    assert not publishes(acts) and not executes(acts) and m.state == "idle"


def test_greengrass_deployment_document_is_left_alone():
    m = machine()
    look = m.start(0)[0]
    gg = execution(doc={"configurationArn": "arn:aws:greengrass:...", "components": {}})
    acts = m.on_message(P + "$next/get/accepted", msg({"execution": gg, "clientToken": look.payload["clientToken"]}), 0)
    assert not publishes(acts) and not executes(acts)


def test_restart_resumes_a_running_entry_from_the_journal():
    journal = Journal()
    journal.put("job-1", 1, 0, state="running", doneSteps=1, startedStep=1)
    m = machine(journal=Journal.from_json(json.loads(json.dumps(journal.to_json()))))
    look = m.start(10)[0]
    acts = m.on_message(P + "$next/get/accepted",
                        msg({"execution": execution("IN_PROGRESS", version=2), "clientToken": look.payload["clientToken"]}), 10)
    [ex] = executes(acts)
    assert ex.done_steps == 1 and ex.interrupted == 1


def test_unacknowledged_result_is_checked_then_resent_after_restart():
    journal = Journal()
    journal.put("job-1", 1, 0, state="finished", status="FAILED", statusDetails={"reason": "boom"})
    m = machine(journal=journal)
    [check] = publishes(m.start(5))
    assert check.topic == P + "job-1/get"
    acts = m.on_message(P + "job-1/get/accepted",
                        msg({"execution": execution("IN_PROGRESS", version=7), "clientToken": check.payload["clientToken"]}), 5)
    [final] = publishes(acts)
    assert final.payload["status"] == "FAILED" and final.payload["expectedVersion"] == 7


def test_unacknowledged_result_already_terminal_on_the_service_is_closed():
    journal = Journal()
    journal.put("job-1", 1, 0, state="finished", status="SUCCEEDED", statusDetails={})
    m = machine(journal=journal)
    [check] = publishes(m.start(5))
    acts = m.on_message(P + "job-1/get/rejected", msg({"code": "TerminalStateReached", "clientToken": check.payload["clientToken"]}), 5)
    assert journal.get("job-1", 1)["state"] == "acknowledged"
    assert [p.topic for p in publishes(acts)] == [P + "$next/get"]


@pytest.mark.parametrize("code", ["RequestThrottled", "InternalError"])
def test_throttling_and_internal_errors_are_retried_with_backoff(code):
    # rng 1.0 is the top of the jitter range: the full doubled delay, capped at retry_max
    m = machine(retry_initial=2, retry_max=5, rng=lambda: 1.0)
    claim_and_run(m)
    m.on_execution_done("job-1", 1, "SUCCEEDED", {"summary": "ok"}, 10)
    delays = []
    now = 10.0
    for _ in range(4):
        token = m.pending["token"]
        assert m.on_message(P + "job-1/update/rejected", msg({"code": code, "clientToken": token}), now) == []
        due = m.pending["retry_at"]
        delays.append(due - now)
        assert m.tick(due - 0.01) == []
        [again] = publishes(m.tick(due))
        assert again.payload["clientToken"] != token and again.payload["status"] == "SUCCEEDED"
        now = due
    assert delays == [2, 4, 5, 5]


def test_non_retryable_rejection_is_not_retried():
    m = machine()
    claim_and_run(m)
    m.on_execution_done("job-1", 1, "SUCCEEDED", {"summary": "ok"}, 1)
    token = m.pending["token"]
    acts = m.on_message(P + "job-1/update/rejected", msg({
        "code": "InvalidStateTransition", "clientToken": token,
        "executionState": {"status": "CANCELED", "versionNumber": 4}}), 1)
    assert m.journal.get("job-1", 1)["state"] == "acknowledged"
    assert all(p.topic == P + "$next/get" for p in publishes(acts))


def test_version_mismatch_still_in_progress_is_resubmitted_with_the_new_version():
    m = machine()
    claim_and_run(m)
    m.on_execution_done("job-1", 1, "SUCCEEDED", {"summary": "ok"}, 1)
    token = m.pending["token"]
    acts = m.on_message(P + "job-1/update/rejected", msg({
        "code": "VersionMismatch", "clientToken": token,
        "executionState": {"status": "IN_PROGRESS", "versionNumber": 9}}), 1)
    [again] = publishes(acts)
    assert again.payload["expectedVersion"] == 9 and again.payload["status"] == "SUCCEEDED"


def test_invalid_request_falls_back_to_a_minimal_status_once():
    m = machine()
    claim_and_run(m)
    m.on_execution_done("job-1", 1, "FAILED", {"reason": "why", "stdout": "x" * 50}, 1)
    acts = m.on_message(P + "job-1/update/rejected", msg({"code": "InvalidRequest", "clientToken": m.pending["token"]}), 1)
    [minimal] = publishes(acts)
    assert minimal.payload["statusDetails"] == {"reason": "why"}
    acts = m.on_message(P + "job-1/update/rejected", msg({"code": "InvalidRequest", "clientToken": m.pending["token"]}), 1)
    assert m.journal.get("job-1", 1)["state"] == "abandoned"


def test_lost_reply_is_resent_after_the_reply_timeout():
    m = machine(reply_timeout=3)
    [look] = publishes(m.start(0))
    assert m.tick(2.9) == []
    [again] = publishes(m.tick(3.0))
    assert again.topic == look.topic and again.payload["clientToken"] != look.payload["clientToken"]


def test_claim_refused_because_someone_else_finished_it_is_abandoned_not_retried_forever():
    m = machine()
    look = m.start(0)[0]
    acts = m.on_message(P + "$next/get/accepted", msg({"execution": execution(), "clientToken": look.payload["clientToken"]}), 0)
    claim = publishes(acts)[0]
    m.on_message(P + "job-1/update/rejected", msg({"code": "InvalidStateTransition", "clientToken": claim.payload["clientToken"],
                                                   "executionState": {"status": "CANCELED", "versionNumber": 2}}), 0)
    assert m.journal.get("job-1", 1)["state"] == "abandoned"
    # seen again later: not touched
    m.state = "idle"
    look = publishes(m._next_work(1))[0]
    acts = m.on_message(P + "$next/get/accepted", msg({"execution": execution(), "clientToken": look.payload["clientToken"]}), 1)
    assert not publishes(acts) and not executes(acts)


def test_only_device_statuses_are_ever_sent():
    m = machine()
    claim_and_run(m)
    for bad in ("TIMED_OUT", "CANCELED", "REMOVED", "QUEUED"):
        with pytest.raises(ValueError):
            m.on_execution_done("job-1", 1, bad, {}, 1)


def test_step_progress_is_journaled():
    m = machine()
    claim_and_run(m)
    assert isinstance(m.on_step("job-1", 1, 0, "started", 1)[0], SaveJournal)
    assert m.journal.get("job-1", 1)["startedStep"] == 0
    m.on_step("job-1", 1, 0, "done", 2)
    entry = m.journal.get("job-1", 1)
    assert entry["doneSteps"] == 1 and "startedStep" not in entry


def test_sanitize_details_respects_api_limits():
    details = {"reason": "bad\x00thing\nhere", "bad key!": "v", "empty": "", "stdout": "a" * 5000,
               "summary": "s" * 2000}
    details.update({f"k{i}": str(i) for i in range(40)})
    out = jobs.sanitize_details(details)
    assert len(out) == jobs.MAX_DETAIL_ENTRIES
    assert list(out)[:2] == ["reason", "summary"]
    assert out["reason"] == "bad thing here"
    assert "bad_key_" in out and "empty" not in out
    assert len(out["stdout"]) == 1024 and out["stdout"].endswith("a") and out["stdout"].startswith("...")
    assert len(out["summary"]) == 1024 and out["summary"].endswith("...")
    for k, v in out.items():
        assert jobs.DETAIL_KEY_BAD.search(k) is None and 1 <= len(v) <= 1024


def test_journal_is_bounded_but_keeps_unfinished_entries():
    j = Journal()
    j.put("keep", 1, 0, state="running")
    for i in range(jobs.MAX_JOURNAL_ENTRIES + 50):
        j.put(f"j{i}", 1, i + 1, state="acknowledged")
    assert len(j.entries) <= jobs.MAX_JOURNAL_ENTRIES
    assert j.get("keep", 1) is not None


def test_retry_delays_are_jittered_within_half_and_full_doubling():
    draws = iter([0.0, 0.5, 0.25, 0.0, 0.999])
    m = machine(retry_initial=2, retry_max=16, rng=lambda: next(draws))
    claim_and_run(m)
    m.on_execution_done("job-1", 1, "SUCCEEDED", {"summary": "ok"}, 10)
    delays, now = [], 10.0
    for _ in range(5):
        m.on_message(P + "job-1/update/rejected", msg({"code": "RequestThrottled",
                                                        "clientToken": m.pending["token"]}), now)
        due = m.pending["retry_at"]
        delays.append(round(due - now, 3))
        publishes(m.tick(due))
        now = due
    # caps 2, 4, 8, 16, 16: each delay is cap/2 + draw * cap/2, never above RetryMaxSeconds
    assert delays == [1.0, 3.0, 5.0, 8.0, 15.992]
    assert all(d <= 16 for d in delays)


def _probe_reply(m, outcome, body, now=1.0):
    token = m.pending["token"]
    return m.on_message(P + f"job-1/get/{outcome}", msg(dict(body, clientToken=token)), now)


@pytest.mark.parametrize("outcome,body", [
    ("rejected", {"code": "TerminalStateReached", "message": "canceled"}),
    ("accepted", {"execution": {"status": "CANCELED", "versionNumber": 3}}),
    ("rejected", {"code": "ResourceNotFound", "message": "deleted"}),
])
def test_cancelled_running_execution_is_stopped_and_never_reported(outcome, body):
    m = machine()
    claim_and_run(m)
    # cancel --force: the service sends notify with the execution gone from the list
    [probe] = publishes(m.on_message(P + "notify", msg({"jobs": {}}), 0.5))
    assert probe.topic == P + "job-1/get" and probe.payload["executionNumber"] == 1
    acts = _probe_reply(m, outcome, body)
    cancels = [a for a in acts if isinstance(a, jobs.Cancel)]
    assert [(c.job_id, c.execution_number) for c in cancels] == [("job-1", 1)]
    assert m.journal.get("job-1", 1)["state"] == "canceled" and not publishes(acts)
    # the worker stops and returns its (interrupted) result: nothing is published for job-1 ever again
    acts = m.on_execution_done("job-1", 1, "FAILED", {"reason": "stopped"}, 2)
    assert all("job-1/" not in p.topic for p in publishes(acts))
    assert [p.topic for p in publishes(acts)] == [P + "$next/get"]  # goes on with the queue
    # after a restart the journal keeps it closed
    m2 = machine(journal=Journal.from_json(json.loads(json.dumps(m.journal.to_json()))))
    look = publishes(m2.start(3))[0]
    acts = m2.on_message(P + "$next/get/accepted",
                         msg({"execution": execution("IN_PROGRESS", version=3), "clientToken": look.payload["clientToken"]}), 3)
    assert not executes(acts) and not publishes(acts)


def test_result_arriving_during_a_probe_waits_for_its_answer():
    m = machine()
    claim_and_run(m)
    publishes(m.on_message(P + "notify-next", msg({}), 0.5))
    assert m.pending["kind"] == "probe"
    assert not publishes(m.on_execution_done("job-1", 1, "SUCCEEDED", {"summary": "ok"}, 0.6))
    acts = _probe_reply(m, "rejected", {"code": "TerminalStateReached"})
    assert not any("update" in p.topic for p in publishes(acts))
    assert m.journal.get("job-1", 1)["state"] == "canceled"
    # still ours: the held result goes out
    m = machine()
    claim_and_run(m)
    publishes(m.on_message(P + "notify-next", msg({}), 0.5))
    m.on_execution_done("job-1", 1, "SUCCEEDED", {"summary": "ok"}, 0.6)
    [final] = publishes(_probe_reply(m, "accepted", {"execution": {"status": "IN_PROGRESS", "versionNumber": 2}}))
    assert final.topic == P + "job-1/update" and final.payload["status"] == "SUCCEEDED"


def test_running_execution_is_polled_for_cancellation_and_a_lost_probe_is_harmless():
    m = machine(cancel_poll=30, reply_timeout=5)
    claim_and_run(m, now=0)
    assert m.tick(29) == []
    [probe] = publishes(m.tick(30))
    assert probe.topic == P + "job-1/get"
    assert m.tick(35) == [] and m.pending is None  # no answer: keep running, no retry storm
    [again] = publishes(m.tick(60))
    assert again.topic == P + "job-1/get"


def test_paused_machine_finishes_the_running_execution_but_takes_no_new_one():
    m = machine(idle_poll=10)
    claim_and_run(m)
    m.pause(0.5)
    assert not executes(m.on_message(P + "notify-next", msg({"execution": execution(job="job-2")}), 0.6))
    m.pending = None  # drop the cancellation probe for brevity
    [final] = publishes(m.on_execution_done("job-1", 1, "SUCCEEDED", {"summary": "ok"}, 1))
    acts = m.on_message(P + "job-1/update/accepted", msg({"clientToken": final.payload["clientToken"]}), 1)
    assert publishes(acts) == [] and not m.busy  # reported, and no look at the queue
    assert m.tick(100) == [] and m.on_message(P + "notify", msg({"jobs": {"QUEUED": [{"jobId": "j"}]}}), 100) == []
    [look] = publishes(m.resume(101))
    assert look.topic == P + "$next/get"


def test_pause_while_looking_ignores_the_answer():
    m = machine()
    look = publishes(m.start(0))[0]
    m.pause(0.1)
    acts = m.on_message(P + "$next/get/accepted",
                        msg({"execution": execution(), "clientToken": look.payload["clientToken"]}), 0.2)
    assert acts == [] and not m.busy


@pytest.mark.parametrize("entries,needle", [
    ({"seed#1": "x"}, "seed#1"),
    ({"a#1": {"jobId": "a", "executionNumber": 1, "state": "exploded"}}, "state"),
    ({"a#1": {"jobId": "a", "executionNumber": "1", "state": "running"}}, "executionNumber"),
    ({"a#2": {"jobId": "a", "executionNumber": 1, "state": "running"}}, "key"),
    ({"a#1": {"jobId": "a", "executionNumber": 1, "state": "finished"}}, "status"),
    ({"a#1": {"jobId": "a", "executionNumber": 1, "state": "running", "doneSteps": "x"}}, "doneSteps"),
    ({"a#1": {"jobId": "a", "executionNumber": 1, "state": "acknowledged", "statusDetails": {"k": 1}}},
     "statusDetails"),
])
def test_journal_of_the_wrong_shape_is_refused_naming_the_entry(entries, needle):
    with pytest.raises(ValueError) as err:
        Journal.from_json({"version": 1, "entries": entries})
    assert needle in str(err.value) and "remediation journal" in str(err.value)


def test_journal_round_trip_of_every_state_is_accepted():
    j = Journal()
    j.put("a", 1, 1.0, state="running", doneSteps=1, startedStep=1)
    j.put("b", 1, 1.0, state="finished", status="FAILED", statusDetails={"reason": "x"})
    j.put("c", 2, 1.0, state="canceled", serviceStatus="CANCELED")
    again = Journal.from_json(json.loads(json.dumps(j.to_json())))
    assert again.entries == j.entries


def test_reboot_marker_is_journaled_reported_in_progress_and_handed_back_after_restart():
    m = machine()
    claim_and_run(m)
    acts = m.on_step("job-1", 1, 0, "started", 1.0, marker={"bootId": "b-1", "requestedAt": 1.0})
    assert isinstance(acts[0], SaveJournal)
    [progress] = publishes(acts)
    assert progress.topic == P + "job-1/update" and progress.payload["status"] == "IN_PROGRESS"
    assert progress.payload["statusDetails"]["bootId"] == "b-1" and progress.payload["expectedVersion"] == 2
    assert m.journal.get("job-1", 1)["marker"] == {"bootId": "b-1", "requestedAt": 1.0}
    m.on_message(P + "job-1/update/accepted", msg({"executionState": {"status": "IN_PROGRESS", "versionNumber": 3},
                                                    "clientToken": progress.payload["clientToken"]}), 1.1)
    assert m.pending is None and m.current["versionNumber"] == 3
    # the device reboots: the next start resumes the entry with the marker
    m2 = machine(journal=Journal.from_json(json.loads(json.dumps(m.journal.to_json()))))
    look = publishes(m2.start(50))[0]
    [ex] = executes(m2.on_message(P + "$next/get/accepted", msg({"execution": execution("IN_PROGRESS", version=3),
                                                                 "clientToken": look.payload["clientToken"]}), 50))
    assert (ex.interrupted, ex.marker) == (0, {"bootId": "b-1", "requestedAt": 1.0})
    [final] = publishes(m2.on_execution_done("job-1", 1, "SUCCEEDED", {"summary": "rebooted"}, 51))
    assert final.payload["expectedVersion"] == 3


def test_progress_rejected_because_the_execution_was_cancelled_stops_it():
    m = machine()
    claim_and_run(m)
    [progress] = publishes(m.on_step("job-1", 1, 0, "started", 1.0, marker={"bootId": "b"}))
    acts = m.on_message(P + "job-1/update/rejected", msg({
        "code": "InvalidStateTransition", "executionState": {"status": "CANCELED", "versionNumber": 3},
        "clientToken": progress.payload["clientToken"]}), 1.1)
    assert [type(a).__name__ for a in acts] == ["SaveJournal", "Cancel"]
