"""`detect replay` throughput in datapoints per second (target: >= 100,000/s on one core).

Builds a day-like series of reports (listening ports, connections, network stats, custom metrics) and a
profile with 12 behaviors covering every criteria type (static numeric, port/CIDR/string sets, windowed sums,
statistical percentiles, ML bands, a threat-size CIDR list), then times:

- evaluate: metric extraction + evaluation of records already in memory (the evaluator's own speed);
- end to end: reading a kept `reports.jsonl` from disk, parsing, sorting and evaluating (what the CLI does).

A datapoint is one behavior evaluated on one value (a windowed behavior gives one per closed window).

    .venv/bin/python bench/detect_replay_bench.py [--reports 20000] [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "components"))

from ggdefender.detect.profile import load_profile  # noqa: E402
from ggdefender.devtools.replay import load_records, replay  # noqa: E402
from ggdefender.detect.statistics import StatsConfig  # noqa: E402

TARGET = 100_000


def make_profile(threat_entries: int) -> dict:
    rnd = random.Random(7)
    threat = [f"{rnd.randrange(1, 223)}.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(256)}"
              for _ in range(threat_entries)] + ["203.0.113.0/24"]
    b = [
        {"name": "tcp", "metric": "aws:listening-tcp-ports",
         "criteria": {"comparisonOperator": "in-port-set", "value": {"ports": [22, 25, 38905]}}},
        {"name": "udp", "metric": "aws:listening-udp-ports",
         "criteria": {"comparisonOperator": "not-in-port-set", "value": {"ports": [69, 161]}}},
        {"name": "dest", "metric": "aws:destination-ip-addresses",
         "criteria": {"comparisonOperator": "in-cidr-set", "value": {"cidrs": ["10.0.0.0/8", "198.51.100.0/24"]}}},
        {"name": "threat", "metric": "aws:destination-ip-addresses",
         "criteria": {"comparisonOperator": "not-in-cidr-set", "value": {"cidrs": threat}}},
        {"name": "conns", "metric": "aws:num-established-tcp-connections",
         "criteria": {"comparisonOperator": "less-than", "value": {"count": 50}, "consecutiveDatapointsToAlarm": 2}},
        {"name": "ntcp", "metric": "aws:num-listening-tcp-ports",
         "criteria": {"comparisonOperator": "less-than-equals", "value": {"count": 4}, "durationSeconds": 300}},
        {"name": "bytesout", "metric": "aws:all-bytes-out",
         "criteria": {"comparisonOperator": "less-than", "value": {"count": 10_000_000}, "durationSeconds": 300}},
        {"name": "pktout-stat", "metric": "aws:all-packets-out",
         "criteria": {"comparisonOperator": "less-than-equals", "statisticalThreshold": {"statistic": "p99.9"},
                      "durationSeconds": 300}},
        {"name": "pktin-ml", "metric": "aws:all-packets-in", "criteria": {"mlDetectionConfig": {"confidenceLevel": "HIGH"}}},
        {"name": "cpu", "metric": "cpu_usage", "criteria": {"comparisonOperator": "less-than", "value": {"number": 95}}},
        {"name": "cpu-stat", "metric": "cpu_usage",
         "criteria": {"comparisonOperator": "less-than-equals", "statisticalThreshold": {"statistic": "p99"}}},
        {"name": "users", "metric": "logged_in_users",
         "criteria": {"comparisonOperator": "in-set", "value": {"strings": ["root", "ggc_user"]}}},
    ]
    return {"securityProfileName": "Bench", "behaviors": b}


def make_records(n: int, start: int = 1_764_000_000, every: float = 10.0) -> list:
    rnd = random.Random(42)
    out = []
    for i in range(n):
        ports = [22, 25, 38905] + ([8888] if rnd.random() < 0.01 else [])
        remotes = [f"10.0.{rnd.randrange(4)}.{rnd.randrange(255)}:{rnd.randrange(1024, 65535)}" for _ in range(4)]
        if rnd.random() < 0.005:
            remotes.append("203.0.113.9:443")
        rep = {"header": {"report_id": (start * 1000) + int(i * every * 1000), "version": "1.0"},
               "metrics": {
                   "listening_tcp_ports": {"ports": [{"port": p, "interface": "eth0"} for p in ports], "total": len(ports)},
                   "listening_udp_ports": {"ports": [{"port": 53}], "total": 1},
                   "tcp_connections": {"established_connections": {
                       "connections": [{"remote_addr": r, "local_port": 8883} for r in remotes], "total": len(remotes)}},
                   "network_stats": {"bytes_in": rnd.randrange(10_000, 20_000), "bytes_out": rnd.randrange(10_000, 30_000),
                                     "packets_in": rnd.randrange(80, 120), "packets_out": rnd.randrange(90, 130)}},
               "custom_metrics": {"cpu_usage": [{"number": rnd.uniform(5, 60)}],
                                  "logged_in_users": [{"string_list": ["root"]}]}}
        out.append({"receivedAt": start + i * every + 0.25, "topic": "$aws/things/benchThing/defender/metrics/json",
                    "report": rep})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reports", type=int, default=20_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threat-entries", type=int, default=10_000)
    args = ap.parse_args()

    prof = load_profile(make_profile(args.threat_entries))
    raw = make_records(args.reports)
    stats = StatsConfig(warmup=30, ml_warmup=288)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cloud" / "defender" / "benchThing" / "reports.jsonl"
        path.parent.mkdir(parents=True)
        path.write_text("\n".join(json.dumps(r, separators=(",", ":")) for r in raw) + "\n")
        records = load_records(str(path))

        eval_rates, e2e_rates, points, events = [], [], 0, 0
        for _ in range(args.reps):
            t0 = time.perf_counter()
            result = replay([prof], records, stats=stats, keep_series=False)
            eval_rates.append(result.datapoints / (time.perf_counter() - t0))
            points, events = result.datapoints, len(result.events)
            t0 = time.perf_counter()
            result = replay([prof], load_records(str(path)), stats=stats, keep_series=False)
            e2e_rates.append(result.datapoints / (time.perf_counter() - t0))

    ev, e2e = statistics.median(eval_rates), statistics.median(e2e_rates)
    print(f"reports: {len(records)}, behaviors: {len(prof.behaviors)}, datapoints per replay: {points}, "
          f"violation events: {events}")
    print(f"evaluate (records in memory): {ev:12,.0f} datapoints/s  (median of {args.reps}; "
          f"{ev / TARGET:.2f}x the {TARGET:,}/s target)")
    print(f"end to end (read + parse + evaluate reports.jsonl): {e2e:12,.0f} datapoints/s  ({e2e / TARGET:.2f}x)")
    return 0 if ev >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
