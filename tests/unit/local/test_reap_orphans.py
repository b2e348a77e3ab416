"""reap_orphans ends only the very process groups a dead core on this root started (pid and start time)."""

import subprocess
import sys

from ggdefender.local.nucleus import lifecycle as lc


def _group_leader():
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)


def test_only_the_recorded_process_is_ended_and_records_are_cleared(tmp_path):
    ours, stranger = _group_leader(), _group_leader()
    try:
        lc._record_process(tmp_path, ours.pid, "test.Comp", "Run")
        # a record whose pid now belongs to another process (a reused pid): other start time
        folder = tmp_path / lc.PROCESS_RECORDS
        (folder / str(stranger.pid)).write_text("1 test.Other Run\n")
        (folder / "garbage").write_text("not a record")
        (tmp_path / "logs").mkdir()
        reaped = lc.reap_orphans(tmp_path, grace=5)
        assert reaped == [f"test.Comp Run (process group {ours.pid})"]
        assert ours.wait(10) is not None
        assert stranger.poll() is None
        assert list(folder.iterdir()) == []
        assert "ended Run (process group" in (tmp_path / "logs" / "test.Comp.log").read_text()
        assert lc.reap_orphans(tmp_path, grace=5) == []
    finally:
        for p in (ours, stranger):
            p.kill()
            p.wait()
