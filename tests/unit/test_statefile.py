"""Every persisted state is read by statefile.read_json: a file of the right syntax but the wrong shape is moved
aside with a warning naming it, and the part goes on from its default (issue 10, item 5)."""

import json
import logging
import os

import pytest

from ggdefender import statefile
from ggdefender.collector.report_id import FILE_NAME as REPORT_ID_FILE
from ggdefender.collector.report_id import ReportIds
from ggdefender.detect.state import STATE_FILE, AlarmStore
from ggdefender.detect.statistics import History
from ggdefender.remediation import jobs


def _check_counter(obj):
    statefile.need(obj, dict, "the state")
    return statefile.need(obj.get("n"), int, "n")


def _asides(folder, name):
    return sorted(p for p in os.listdir(folder) if p.startswith(name + ".bad-"))


def test_missing_file_is_the_default_without_a_warning(tmp_path, caplog):
    assert statefile.read_json(str(tmp_path / "none.json"), _check_counter, lambda: 7) == 7
    assert caplog.records == []


def test_good_file_is_returned_by_the_check(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"n": 3}')
    assert statefile.read_json(str(path), _check_counter, lambda: 0) == 3
    assert path.exists() and _asides(tmp_path, "s.json") == []


@pytest.mark.parametrize("content, problem", [
    (b'{"n": "3"}', "wrong shape: n must be an integer, not str"),
    (b'[1]', "wrong shape: the state must be an object, not list"),
    (b'{"n": true}', "wrong shape: n must be an integer, not bool"),
    (b'{broken', "not JSON"),
    (b'\xff\xfe', "not JSON"),
    (b'[' * 100_000, "not JSON"),
])
def test_bad_file_is_moved_aside_with_a_warning_naming_both_files(tmp_path, caplog, content, problem):
    path = tmp_path / "s.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        assert statefile.read_json(str(path), _check_counter, lambda: 0, what="test state") == 0
    (aside,) = _asides(tmp_path, "s.json")
    assert not path.exists() and (tmp_path / aside).read_bytes() == content
    (rec,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    msg = rec.getMessage()
    assert "test state" in msg and str(path) in msg and problem in msg and str(tmp_path / aside) in msg


def test_only_the_newest_bad_copies_are_kept(tmp_path):
    path = tmp_path / "s.json"
    for i in range(statefile.MAX_BAD_COPIES + 4):
        path.write_text(json.dumps({"n": f"bad {i}"}))
        statefile.read_json(str(path), _check_counter, lambda: 0)
    kept = _asides(tmp_path, "s.json")
    assert len(kept) == statefile.MAX_BAD_COPIES
    # the newest survive: the last bad content is among them
    contents = {json.loads((tmp_path / k).read_text())["n"] for k in kept}
    assert f"bad {statefile.MAX_BAD_COPIES + 3}" in contents and "bad 0" not in contents


# -- each state file, with a wrong-shape fixture -------------------------------------------------------------

@pytest.mark.parametrize("content", ['"1700000000000"', "-5", "1.5", str(2 ** 60), "{}", "true"])
def test_report_id_of_the_wrong_shape_continues_from_the_clock(tmp_path, content):
    (tmp_path / REPORT_ID_FILE).write_text(content)
    ids = ReportIds.in_state_dir(str(tmp_path), clock=lambda: 1_700_000_000.0)
    assert ids.next() == 1_700_000_000_000
    assert len(_asides(tmp_path, REPORT_ID_FILE)) == 1


def test_report_id_of_the_old_plain_text_form_still_reads(tmp_path):
    (tmp_path / REPORT_ID_FILE).write_text("1800000000000")
    assert ReportIds.in_state_dir(str(tmp_path), clock=lambda: 1.0).next() == 1_800_000_000_001


@pytest.mark.parametrize("content", [
    '{"entries": {"seed#1": "x"}}',                       # the journal of issue 10 item 5
    '{"entries": []}',
    '{"entries": {"j#1": {"jobId": "j", "executionNumber": "1", "status": "running"}}}',
    '[]',
])
def test_job_journal_of_the_wrong_shape_starts_empty(tmp_path, content):
    path = tmp_path / "remediation-journal.json"
    path.write_text(content)
    journal = statefile.read_json(str(path), jobs.Journal.from_json, jobs.Journal, what="journal")
    assert isinstance(journal, jobs.Journal) and journal.to_json()["entries"] == {}
    assert len(_asides(tmp_path, "remediation-journal.json")) == 1


@pytest.mark.parametrize("content", [
    '{"states": [1]}',
    '{"states": {"p/b": {"actions": 5}}}',
    '{"states": {"p/b": {"vstreak": "2"}}}',
    '{"states": {"p/b": {"in_alarm": true}}}',           # in alarm without a violation id
    '{"states": {"p/b": {"offending": [1, 2]}}}',
    '{"outbox": 7}',
    '{"outbox": [["violation"]]}',
    '{"outbox": [["tweet", {}]]}',
    '{"outbox": [["violation", "x"]]}',
    '{"outbox": {"items": [], "dropped": "many"}}',
    '{"findings": "x"}',
    '{"findings": {"v1": 3}}',
    '{"extra": []}',
])
def test_alarm_state_of_the_wrong_shape_starts_without_alarms(tmp_path, content):
    path = tmp_path / STATE_FILE
    path.write_text(content)
    store = AlarmStore(str(path))
    assert store.states == {} and len(store.outbox) == 0 and store.findings == {} and store.extra == {}
    assert len(_asides(tmp_path, STATE_FILE)) == 1


def test_alarm_state_round_trips_and_reads_the_first_outbox_format(tmp_path):
    path = tmp_path / STATE_FILE
    path.write_text(json.dumps({"states": {}, "outbox": [["violation", {"violationId": "v1"}]], "findings": {}}))
    store = AlarmStore(str(path))
    assert list(store.outbox) == [("violation", {"violationId": "v1"})]
    store.outbox.dropped = 4
    store.save()
    again = AlarmStore(str(path))
    assert list(again.outbox) == [("violation", {"violationId": "v1"})] and again.outbox.dropped == 4
    assert _asides(tmp_path, STATE_FILE) == []


@pytest.mark.parametrize("content", [
    '{"series": []}',
    '{"series": {"m@0": 5}}',
    '{"series": {"m@0": [[1, 2], "junk"]}}',
    '{"series": {"m@0": [[1, "2"]]}}',
    '{"series": {"m@0": [[1, 2, 3]]}}',
    '"series"',
])
def test_statistics_history_of_the_wrong_shape_starts_a_new_baseline(tmp_path, content):
    path = tmp_path / "detect-statistics.json"
    path.write_text(content)
    assert History(path=str(path)).series == {}
    assert len(_asides(tmp_path, "detect-statistics.json")) == 1


@pytest.mark.parametrize("content", [
    '{"jobs": [], "executions": {}}',
    '{"jobs": {"j": {"thing": "t", "status": "IN_PROGRESS", "createdAt": 1}}, "executions": {}}',  # no document
    '{"jobs": {}, "executions": {"t/j": [{"jobId": "j"}]}}',
])
def test_local_jobs_state_of_the_wrong_shape_starts_empty(tmp_path, content):
    from ggdefender.local.nucleus.core import Core
    from ggdefender.local.cloud.jobs_service import JobsService

    state = tmp_path / "cloud" / "jobs" / "state.json"
    state.parent.mkdir(parents=True)
    state.write_text(content)
    svc = JobsService(Core(thing_name="t"), tmp_path)
    try:
        assert svc.jobs == {} and svc.executions == {}
        assert len(_asides(state.parent, "state.json")) == 1
    finally:
        svc.close()
