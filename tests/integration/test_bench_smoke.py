"""The performance suite's pieces run end to end at tiny N (no timing is asserted: speed lives in bench/).

Runs `bench/suite.py --quick` (N in {0, 10}, one repetition) without the AWS agent (that needs PyPI) and
checks that it wrote a report with the scaling table, the chart and the raw results (all into a temp folder), and that the connection
holder left no connection behind.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "bench" / "suite.py"


def _established_to(port_set) -> int:
    n = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "01" and int(f[2].split(":")[1], 16) in port_set:
                n += 1
    return n


def test_suite_quick_scaling_and_detect(tmp_path):
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs Linux /proc/net")
    out = subprocess.run([sys.executable, str(SUITE), "--quick", "--no-agent", "--only", "scaling,detect",
                          "--out-dir", str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    md = (tmp_path / "performance.md").read_text()
    assert "## Collection time against connections" in md
    assert "| 10 (20) |" in md  # the N=10 row of the scaling table
    assert (tmp_path / "performance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((tmp_path / "results.json").read_text())
    rows = {r["n"]: r for r in results["scaling"]}
    assert set(rows) == {0, 10}
    assert rows[10]["established_rows"] >= 20  # both ends of the 10 connections were seen
    assert rows[10]["ours_reps"] == 1 and rows[10]["ours_bytes"] > 0
    assert rows[10]["ours_peak_rss_mib"] > 0
    if (REPO / "bench" / "detect_replay_bench.py").exists():
        assert results["detect"].get("datapoints_per_s", 0) > 0, results["detect"]


def test_holder_releases_its_connections_when_the_parent_goes_away():
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import suite
    finally:
        sys.path.remove(str(REPO / "bench"))
    holder = suite.ConnectionHolder()
    try:
        holder.hold(5)
        with pytest.raises(RuntimeError, match="N must be"):
            holder.hold(suite.MAX_CONNECTIONS + 1)
        import psutil

        child = psutil.Process(holder.proc.pid)
        ports = {c.laddr.port for c in child.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
        assert len(ports) == 1 and _established_to(ports) == 5
    finally:
        holder.proc.stdin.close()  # what a crashed parent's exit does to the pipe
        holder.proc.wait(30)
    assert holder.proc.returncode == 0
    assert _established_to(ports) == 0  # SO_LINGER 0: gone at once, nothing in TIME_WAIT either
