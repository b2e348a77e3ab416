"""`ggdefender fleet baselines`: run the daily baselines job (Flink, batch) for one day and write the model."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
from typing import Any, List, Optional

from . import baselines as B

PROG = "ggdefender fleet baselines"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", required=True, help="the CreateSecurityProfile JSON (its ML behaviors get models)")
    p.add_argument("--input", required=True, nargs="+", metavar="PATH",
                   help="JSON-lines files or directories of reports (the topic rule's output, or a `ggdefender "
                        "local` rule's messages.jsonl); s3://bucket/prefix where Flink has S3 (Managed Service "
                        "for Apache Flink). '{day}' in a path stands for --day (e.g. s3://b/reports/day={day}/)")
    p.add_argument("--state", required=True, help="directory of the daily partials (days/) and the models "
                                                  "(baselines-<day>.json; the streaming job's --model)")
    p.add_argument("--day", help="the UTC day whose reports to add, YYYY-MM-DD (default: yesterday)")
    p.add_argument("--min-datapoints", type=int, default=B.MIN_DATAPOINTS,
                   help=f"datapoints before a model is ACTIVE (default {B.MIN_DATAPOINTS:,}, as AWS)")
    p.add_argument("--min-days", type=int, default=B.MIN_DAYS,
                   help=f"days with data before a model is ACTIVE, 1..{B.WINDOW_DAYS} (default {B.MIN_DAYS}, as AWS)")
    p.add_argument("--parallelism", type=int, default=1, help="Flink parallelism (default 1)")


def register(fleet_subparsers: Any) -> None:
    p = fleet_subparsers.add_parser(
        "baselines", help="the daily ML baselines job: a day of reports -> the model of the last 14 days",
        description="Adds one day of reports to the fleet baselines and writes the model of the last 14 days "
                    "(docs/fleet.md, 'Baselines').")
    add_arguments(p)
    p.set_defaults(func=run, on_cluster=False)


def _problem(args: argparse.Namespace) -> Optional[str]:
    if not 1 <= args.min_days <= B.WINDOW_DAYS:
        return f"--min-days must be 1..{B.WINDOW_DAYS}, got {args.min_days}"
    if args.min_datapoints < 1:
        return f"--min-datapoints must be at least 1, got {args.min_datapoints}"
    if not 1 <= args.parallelism <= 64:
        return f"--parallelism must be 1..64, got {args.parallelism}"
    for path in args.input:
        if "://" not in path and not os.path.exists(path):
            return f"--input {path}: no such file or directory"
    return None


def run(args: argparse.Namespace) -> int:
    from ggdefender.detect.profile import ProfileError, read_profile_file

    from . import baselines_job

    def say(message: str) -> None:
        print(f"{PROG}: {message}", file=sys.stderr, flush=True)

    try:
        day = args.day or (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)).isoformat()
        B.day_start_ms(day)
        args.input = [p.replace("{day}", day) for p in args.input]
        problem = _problem(args)
        if problem:
            raise ValueError(problem)
        profile = read_profile_file(args.profile)
        if not B.series_of(profile):
            raise ValueError(f"{args.profile}: the profile has no ML behavior (mlDetectionConfig): nothing to learn")
        B.load_partials(args.state, day)  # a bad partial stops us before Flink starts, not after
    except (ValueError, ProfileError, B.BaselinesError, OSError) as exc:
        say(str(exc))
        return 2
    if not args.on_cluster and not shutil.which("java") and not os.environ.get("JAVA_HOME"):
        say("Java is not installed (Flink needs it): install openjdk-17-jre-headless (Debian/Ubuntu)")
        return 2
    say(f"day {day}: {len(args.input)} input path(s), {len(B.series_of(profile))} series, state {args.state}")
    try:
        result = baselines_job.run_day(
            profile.source, [_absolute(p) for p in args.input], _absolute(args.state), day,
            min_datapoints=args.min_datapoints, min_days=args.min_days, parallelism=args.parallelism,
            on_cluster=args.on_cluster, progress=say)
    except ValueError as exc:  # the input held no line
        say(str(exc))
        return 1
    except Exception as exc:  # Flink's error (py4j) names what went wrong
        say(f"the Flink job failed: {_cause(str(exc))}")
        return 1
    if "input" in result:
        counts = result["input"]
        rejected = sum(r["lines"] for r in counts["rejected"].values())
        say(f"{counts['reports']:,} reports ({counts['duplicates']:,} duplicates, {counts['otherDays']:,} of other "
            f"days, {rejected:,} lines rejected), {result['datapoints']:,} datapoints in "
            f"{result['seconds']} s ({result['datapointsPerSecond']:,} datapoints/s)")
        for reason, r in sorted(counts["rejected"].items()):
            say(f"  rejected {reason}: {r['lines']:,} line(s), e.g. {r['example']}")
        for key, b in result["behaviors"].items():
            say(f"  {key}: {b['status']} ({b['datapoints']:,} datapoints, {b['days']} day(s))")
    say(f"model: {result['model']}")
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


def _absolute(path: str) -> str:
    # Flink's workers need not share our working directory
    return path if "://" in path else os.path.abspath(path)


def _cause(text: str) -> str:
    """The innermost 'Caused by:' line of a Java stack trace (the useful one), else the text's start."""
    causes = [line.strip() for line in text.splitlines() if line.strip().startswith("Caused by:")]
    return causes[-1][:1000] if causes else text[:1000]


def main(argv: List[str], on_cluster: bool = False) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="the daily baselines job (docs/fleet.md)")
    add_arguments(parser)
    parser.set_defaults(on_cluster=on_cluster)
    return run(parser.parse_args(argv))
