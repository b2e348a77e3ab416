"""What the `ggdefender local` core keeps per report: publish thousands of Device Defender reports through a
running local core (the harness, in this process) and measure where memory grows (tracemalloc, by file:line)
and how big every per-report structure gets.

    python bench/local_core_memory.py [--reports 3000] [--report-bytes 10000] [--top 12]

Prints a JSON summary (bytes per report after warm-up, the top allocation sites, structure sizes). Not a test:
tests/integration/local/test_core_bounded.py asserts the structures stay bounded.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "components"))

from ggdefender.local.ui import harness  # noqa: E402

THING = "benchThing"
SOURCE = "ggdefender.Defender"


def structure_sizes(runtime) -> dict:
    """Length of every per-message structure of the local core (what must stay bounded)."""
    out = {"view.events": len(runtime.view.events), "core.subscriptions": runtime.core.subscription_counts()}
    for svc in runtime.services:
        name = type(svc).__name__
        if hasattr(svc, "structure_sizes"):
            out.update((f"{name}.{k}", v) for k, v in svc.structure_sizes().items())
        elif hasattr(svc, "events"):
            out[f"{name}.events"] = len(svc.events)
    return out


def make_report(report_id: int, target_bytes: int) -> bytes:
    """A valid JSON report of about target_bytes: many established connections, like a busy gateway."""
    conns = []
    report = {"header": {"report_id": report_id, "version": "1.0"},
              "metrics": {"listening_tcp_ports": {"ports": [{"port": p, "interface": "eth0"} for p in range(20, 40)],
                                                  "total": 20},
                          "tcp_connections": {"established_connections": {"connections": conns, "total": 0}}}}
    i = 0
    while len(json.dumps(report)) < target_bytes and i < 2000:
        conns.append({"remote_addr": f"10.0.{i // 250}.{i % 250 + 1}:443", "local_port": 40000 + i,
                      "local_interface": "eth0"})
        i += 1
    report["metrics"]["tcp_connections"]["established_connections"]["total"] = len(conns)
    return json.dumps(report, separators=(",", ":")).encode()


def publish(core: harness.LocalCore, n: int, first_id: int, size: int) -> None:
    accepted = core.capture_iot(f"$aws/things/{THING}/defender/metrics/json/accepted")
    try:
        for i in range(n):
            core.publish_iot(f"$aws/things/{THING}/defender/metrics/json", make_report(first_id + i, size),
                             source=SOURCE)
            if i % 200 == 199:  # let the core keep up, as a component waiting for replies would
                accepted.wait_for(lambda c, k=i: len(c) >= k + 1, timeout=120)
        accepted.wait_for(lambda c: len(c) >= n, timeout=120)
    finally:
        accepted.close()
        core._captures.remove(accepted)


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reports", type=int, default=3000, help="reports in the measured phase")
    ap.add_argument("--warmup", type=int, default=300, help="reports before measuring (fill the caps first to "
                                                              "see the steady state: > 10,000)")
    ap.add_argument("--report-bytes", type=int, default=10_000)
    ap.add_argument("--trace", action="store_true", help="also list the top allocation sites (tracemalloc; "
                                                        "about 10x slower, and it counts replacements in full "
                                                        "buffers as growth)")
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ggd-core-mem-") as root:
        with harness.LocalCore(Path(root) / "core", thing=THING) as core:
            core.add_component(SOURCE)
            publish(core, args.warmup, 1_000_000, args.report_bytes)
            gc.collect()
            if args.trace:
                tracemalloc.start(1)
                before = tracemalloc.take_snapshot()
            blocks0, rss0 = sys.getallocatedblocks(), _rss()
            t0 = time.monotonic()
            publish(core, args.reports, 2_000_000, args.report_bytes)
            elapsed = time.monotonic() - t0
            gc.collect()
            blocks1, rss1 = sys.getallocatedblocks(), _rss()
            summary = {"warmup": args.warmup, "reports": args.reports,
                       "reportBytes": len(make_report(1, args.report_bytes)),
                       "allocatedBlocksPerReport": round((blocks1 - blocks0) / args.reports, 2),
                       "rssBytesPerReport": round((rss1 - rss0) / args.reports, 1),
                       "rssMiB": round(rss1 / 2**20, 1), "seconds": round(elapsed, 1),
                       "structures": structure_sizes(core.runtime)}
            if args.trace:
                after = tracemalloc.take_snapshot()
                tracemalloc.stop()
                diff = after.compare_to(before, "lineno")
                summary["tracedBytesPerReport"] = round(sum(d.size_diff for d in diff) / args.reports, 1)
                summary["top"] = [{"site": f"{Path(d.traceback[0].filename).name}:{d.traceback[0].lineno}",
                                   "bytes": d.size_diff, "blocks": d.count_diff} for d in diff[: args.top]]
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
