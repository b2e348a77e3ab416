"""`ggdefender fleet simulate`: write a simulated fleet's reports (and the injected anomalies' ground truth)."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import time
from typing import Any, List

from . import simulate as sim


def register(fleet_subparsers: Any) -> None:
    p = fleet_subparsers.add_parser(
        "simulate", help="reports of N simulated devices, derived from real collector output (docs/fleet.md)",
        description="Reports of N simulated devices derived from real reports of the collector, with anomalies "
                    "injected on chosen devices and times; lines as the topic rule delivers them.")
    p.add_argument("--devices", type=int, required=True, help=f"fleet size, 1..{sim.MAX_DEVICES:,}")
    span = p.add_mutually_exclusive_group()
    span.add_argument("--hours", type=float, help="simulated time span (default 1)")
    span.add_argument("--reports-per-device", type=int, help="reports per device instead of --hours")
    p.add_argument("--interval", type=int, default=300, help="seconds between a device's reports (default 300)")
    p.add_argument("--start", help="ISO time of the first report (default: the current hour, UTC)")
    p.add_argument("--seed", type=int, default=1, help="random seed (same seed, same output)")
    p.add_argument("--anomaly", action="append", default=[], metavar="SPEC",
                   help="THING@TIME[+DURATION]:KIND[=VALUE], e.g. thing-42@2h:listening-port=8888, "
                        "thing-7@90m+30m:bytes-out=x50, thing-3@1h:connections=+40, thing-9@3h:stop "
                        f"(kinds: {', '.join(sim.ANOMALY_METRICS)})")
    p.add_argument("--from", dest="from_file", metavar="FILE",
                   help="real reports to derive the fleet from (a report, JSON lines of reports, or a "
                        "`ggdefender local` rule's messages.jsonl); default: collect two reports on this machine")
    p.add_argument("--format", choices=("json", "cbor"), default="json", help="report encoding (default json)")
    p.add_argument("--duplicates", type=float, default=0.0, metavar="P", help="fraction of reports delivered twice")
    p.add_argument("--late", metavar="P:SECONDS", help="fraction of reports delivered SECONDS late")
    p.add_argument("--validate", choices=("auto", "all", "none"), default="auto",
                   help=f"schema-check every report (all), a sample above {sim.VALIDATE_ALL_UP_TO:,} reports "
                        "plus every anomalous one (auto, default), or none")
    p.add_argument("--out", required=True, help="output file (JSON lines)")
    p.add_argument("--truth", help="write the ground truth (anomalies, devices, times) here as JSON")
    p.set_defaults(func=main)


def _start_ms(text: Any) -> int:
    if not text:
        now = int(time.time())
        return (now - now % 3600) * 1000
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise sim.SimulationError(f"--start {text!r} is not an ISO time, e.g. 2026-01-01T00:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    ms = int(when.timestamp() * 1000)
    if not 0 < ms < 10**13:
        raise sim.SimulationError(f"--start {text!r} is out of range")
    return ms


def build(args: argparse.Namespace) -> "tuple[sim.Fleet, sim.Delivery]":
    if args.hours is not None:
        if not 0 < args.hours * 3600 <= sim.MAX_SECONDS:
            raise sim.SimulationError(f"--hours must be > 0 and at most {sim.MAX_SECONDS // 3600}, got {args.hours:g}")
        per_device = max(1, int(args.hours * 3600 // max(1, args.interval)))
    else:
        per_device = args.reports_per_device if args.reports_per_device is not None else max(1, 3600 // max(1, args.interval))
    if not 1 <= args.devices <= sim.MAX_DEVICES:
        raise sim.SimulationError(f"--devices must be 1..{sim.MAX_DEVICES:,}, got {args.devices:,}")
    anomalies = [sim.parse_anomaly(s, args.devices) for s in args.anomaly]
    reports: List[dict] = sim.read_reports(args.from_file) if args.from_file else sim.collect_reports()
    fleet = sim.Fleet(devices=args.devices, reports_per_device=per_device, interval=args.interval,
                      start_ms=_start_ms(args.start), seed=args.seed, template=sim.template_from_reports(reports),
                      anomalies=anomalies, fmt=args.format)
    late = sim.parse_late(args.late) if args.late else (0.0, 0.0)
    delivery = sim.Delivery(duplicates=args.duplicates, late_fraction=late[0], late_seconds=late[1])
    delivery.check(fleet)
    return fleet, delivery


def main(args: argparse.Namespace) -> int:
    try:
        fleet, delivery = build(args)
        estimate = sim.estimate_bytes(fleet, delivery)
        directory = os.path.dirname(os.path.abspath(args.out))
        free = shutil.disk_usage(directory).free if os.path.isdir(directory) else None
        if free is not None and estimate > free:
            raise sim.SimulationError(f"the output needs ~{estimate / 1e6:,.0f} MB and {directory} has "
                                      f"{free / 1e6:,.0f} MB free")
    except (sim.SimulationError, OSError) as exc:
        print(f"ggdefender fleet simulate: {exc}", file=sys.stderr)
        return 2
    total = fleet.total_reports
    print(f"simulate: {fleet.devices:,} devices x {fleet.reports_per_device:,} reports every {fleet.interval} s = "
          f"{total:,} reports, ~{estimate / 1e6:,.1f} MB -> {args.out}", file=sys.stderr)
    started = time.monotonic()

    def progress(res: sim.Result) -> None:
        print(f"simulate: {res.reports:,}/{total:,} reports ({100 * res.reports / total:.0f}%), "
              f"{res.bytes / 1e6:,.1f} MB, {time.monotonic() - started:.0f} s", file=sys.stderr)

    tmp = args.out + ".part"  # nothing half-done: the file appears complete or not at all
    try:
        with open(tmp, "wb", buffering=1 << 20) as out:
            res = sim.write(fleet, out, delivery, validate=args.validate, progress=progress)
        os.replace(tmp, args.out)
        if args.truth:
            with open(args.truth + ".part", "w", encoding="utf-8") as fh:
                json.dump(sim.truth(fleet, res, delivery), fh, indent=1)
            os.replace(args.truth + ".part", args.truth)
    except (OSError, sim.SimulationError) as exc:
        for path in (tmp, (args.truth or "") + ".part"):
            if os.path.exists(path):
                os.unlink(path)
        print(f"ggdefender fleet simulate: {exc}", file=sys.stderr)
        return 2
    print(f"simulate: wrote {res.lines:,} lines ({res.reports:,} reports, {res.duplicates:,} duplicates, "
          f"{res.late:,} late; {res.validated:,} schema-checked), {res.bytes / 1e6:,.1f} MB in "
          f"{time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0
