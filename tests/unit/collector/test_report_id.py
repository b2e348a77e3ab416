import os

import pytest

from ggdefender.collector.report_id import FILE_NAME, MAX_ID, ReportIds, atomic_write


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def test_strictly_increasing_when_the_clock_stands_still_or_goes_back(tmp_path):
    clock = Clock(1_700_000_000.0)
    ids = ReportIds.in_state_dir(str(tmp_path), clock=clock)
    a, b = ids.next(), ids.next()
    clock.t -= 3600  # NTP step backwards
    c = ids.next()
    assert a == 1_700_000_000_000 and b == a + 1 and c == b + 1


def test_epoch_milliseconds_when_the_clock_moves_on(tmp_path):
    clock = Clock(1_700_000_000.0)
    ids = ReportIds.in_state_dir(str(tmp_path), clock=clock)
    ids.next()
    clock.t += 300
    assert ids.next() == 1_700_000_300_000


def test_persisted_across_restarts(tmp_path):
    clock = Clock(1_700_000_000.0)
    first = ReportIds.in_state_dir(str(tmp_path), clock=clock)
    last = [first.next() for _ in range(3)][-1]
    clock.t -= 86400  # rebooted with a wrong clock
    again = ReportIds.in_state_dir(str(tmp_path), clock=clock)
    assert again.next() == last + 1
    assert (tmp_path / FILE_NAME).read_text() == str(last + 1)
    assert [p.name for p in tmp_path.iterdir()] == [FILE_NAME]  # no temporary files left behind


def test_unreadable_file_falls_back_to_the_clock(tmp_path, caplog):
    (tmp_path / FILE_NAME).write_text("garbage")
    ids = ReportIds.in_state_dir(str(tmp_path), clock=Clock(1_700_000_000.0))
    assert ids.next() == 1_700_000_000_000
    assert "unusable" in caplog.text and "moved to" in caplog.text


def test_in_memory_counter_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ids = ReportIds(clock=Clock(1.0))
    assert ids.next() == 1000 and ids.next() == 1001
    assert list(tmp_path.iterdir()) == []


def test_overflow_is_refused(tmp_path):
    (tmp_path / FILE_NAME).write_text(str(MAX_ID))
    with pytest.raises(OverflowError):
        ReportIds.in_state_dir(str(tmp_path), clock=Clock(1.0)).next()


def test_atomic_write_replaces_whole_file(tmp_path):
    p = tmp_path / "f"
    atomic_write(str(p), b"one")
    atomic_write(str(p), b"two")
    assert p.read_bytes() == b"two" and os.listdir(tmp_path) == ["f"]
