"""`ggdefender fleet run`: the streaming job on a local Flink mini-cluster over files of reports; progress on
stderr, violations to a file or stdout, counters to `<out>.stats.json`."""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any, List, Optional

from ggdefender.detect import metrics as M

POLL_SECONDS = 2.0


def register(fleet_subparsers: Any) -> None:
    p = fleet_subparsers.add_parser(
        "run", help="the streaming fleet detect job on a local Flink mini-cluster (docs/fleet.md)",
        description="Evaluate a CreateSecurityProfile JSON over reports (the topic rule's JSON lines, or a "
                    "`ggdefender local` root's rule messages) in event time, fleet-wide, on a local Flink "
                    "mini-cluster (Java 17 required).")
    p.add_argument("--profile", required=True, help="the security profile (CreateSecurityProfile JSON file)")
    p.add_argument("--input", nargs="+", default=[], metavar="PATH",
                   help="files or directories of JSON lines (a local root's messages.jsonl too)")
    p.add_argument("--socket", metavar="HOST:PORT", help="read JSON lines from this TCP server until it closes "
                                                         "the connection (instead of files)")
    p.add_argument("--local-root", metavar="DIR", help="read DIR/cloud/rules/*/messages.jsonl of `ggdefender local`")
    p.add_argument("--model", metavar="PATH", help="baselines model file or directory (`fleet baselines`), for "
                                                   "ML behaviors; re-read at most once a minute")
    p.add_argument("--out", metavar="FILE", help="violations as JSON lines (default: stdout)")
    p.add_argument("--dropped", metavar="FILE", help="late, duplicate and unreadable reports as JSON lines "
                                                     "(default: <out>.dropped.jsonl; with stdout: counted only)")
    p.add_argument("--stats", metavar="FILE", help="the run's counters (default: <out>.stats.json)")
    p.add_argument("--parallelism", type=int, default=1, help="Flink parallelism (default 1)")
    p.add_argument("--allowed-lateness", type=float, default=60.0, metavar="S",
                   help="seconds a report may arrive behind its device's newest (and the watermark trails the "
                        "newest event time by); older ones are late (default 60)")
    p.add_argument("--checkpoint-dir", metavar="DIR", help="checkpoint here (retained when the job stops); the "
                                                           "job's own output files live in DIR/output")
    p.add_argument("--checkpoint-interval", type=float, default=10.0, metavar="S", help="default 10")
    p.add_argument("--from-checkpoint", metavar="PATH", help="restart from a retained checkpoint (a chk-N "
                                                             "directory, or the checkpoint dir: its newest)")
    p.add_argument("--follow", type=float, metavar="S", help="keep watching the inputs for new files every S "
                                                             "seconds (runs until stopped)")
    p.add_argument("--custom-metric", action="append", default=[], metavar="NAME=TYPE",
                   help=f"a custom metric's type ({', '.join(M.CUSTOM_TYPES)}), as CreateCustomMetric declared it")
    p.add_argument("--exact-limit", type=int, default=10_000, metavar="N",
                   help="distinct values ranked exactly per behavior and window before a DDSketch (default 10000)")
    p.set_defaults(func=run)


class UsageError(ValueError):
    pass


def _custom_types(specs: List[str]) -> dict:
    out = {}
    for spec in specs:
        name, sep, typ = spec.partition("=")
        if not sep or not name or typ not in M.CUSTOM_TYPES:
            raise UsageError(f"--custom-metric {spec!r}: expected NAME=TYPE with TYPE one of "
                             f"{', '.join(M.CUSTOM_TYPES)}")
        out[name] = typ
    return out


def _inputs(args: argparse.Namespace) -> List[str]:
    paths = list(args.input)
    if args.local_root:
        found = sorted(glob.glob(os.path.join(args.local_root, "cloud", "rules", "*", "messages.jsonl")))
        if not found:
            raise UsageError(f"--local-root {args.local_root}: no cloud/rules/*/messages.jsonl (has a device "
                             f"exported reports? Collector.Export, docs/fleet.md)")
        paths += found
    if not paths and not args.socket:
        raise UsageError("give --input PATH... or --local-root DIR (or --socket HOST:PORT)")
    if paths and args.socket:
        raise UsageError("--socket reads instead of files: give one or the other")
    if args.socket:
        host, _, port = args.socket.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--socket {args.socket!r}: expected HOST:PORT")
    for p in paths:
        if not os.path.exists(p):
            raise UsageError(f"input {p}: no such file or directory")
    return paths


def latest_checkpoint(path: str) -> str:
    """A chk-N directory (with _metadata) as given, or the newest under a checkpoint directory."""
    if os.path.isfile(os.path.join(path, "_metadata")):
        return path
    found = [d for d in glob.glob(os.path.join(path, "**", "chk-*"), recursive=True)
             if os.path.isfile(os.path.join(d, "_metadata"))]
    if not found:
        raise UsageError(f"--from-checkpoint {path}: no completed checkpoint (chk-N/_metadata) there")
    return max(found, key=lambda d: int(d.rsplit("-", 1)[1]))


def _check_runtime() -> None:
    if shutil.which("java") is None:
        raise UsageError("no Java runtime: the local Flink mini-cluster needs Java 17 "
                         "(Debian/Ubuntu: apt-get install openjdk-17-jre-headless)")
    try:
        import pyflink  # noqa: F401
    except ImportError:
        raise UsageError("PyFlink is not installed: pip install 'ggdefender[fleet]' (apache-flink 1.20.3)") from None


def finished_lines(directory: str) -> List[str]:
    """Lines of the FileSink's committed part files (in-progress and pending files start with '.')."""
    lines: List[str] = []
    for path in sorted(glob.glob(os.path.join(directory, "**", "*"), recursive=True)):
        if os.path.isfile(path) and not os.path.basename(path).startswith("."):
            with open(path, encoding="utf-8") as fh:
                lines += [ln for ln in fh.read().splitlines() if ln.strip()]
    return lines


def _event_order(line: str) -> tuple:
    e = json.loads(line)
    return (e["violationEventTime"], e["thingName"], e["behavior"].get("name", ""), e["violationEventType"])


def _progress_line(p: dict, started: float) -> str:
    wm = p.get("watermark")
    if isinstance(wm, int) and 0 < wm < 2 ** 63 - 1:
        wm_text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wm / 1000))
    else:
        wm_text = "end" if isinstance(wm, int) and wm > 0 else "-"
    return (f"fleet run: {time.monotonic() - started:6.0f} s  records {p.get('records', 0):,}  datapoints "
            f"{p.get('datapoints', 0):,}  violations {p.get('violations', 0):,}  late {p.get('late', 0):,}  "
            f"duplicates {p.get('duplicates', 0):,}  watermark {wm_text}")


def run(args: argparse.Namespace) -> int:
    from ggdefender.detect.profile import ProfileError, read_profile_file

    started = time.monotonic()
    try:
        custom = _custom_types(args.custom_metric)
        profile = read_profile_file(args.profile, custom)
        inputs = _inputs(args)
        if args.parallelism < 1 or args.parallelism > 64:
            raise UsageError("--parallelism must be 1..64")
        if args.allowed_lateness < 0:
            raise UsageError("--allowed-lateness must be >= 0")
        restore = latest_checkpoint(args.from_checkpoint) if args.from_checkpoint else None
        if restore and not args.checkpoint_dir:
            raise UsageError("--from-checkpoint needs --checkpoint-dir (the restored job's output files live there)")
        _check_runtime()
    except ProfileError as exc:
        print(f"ggdefender fleet run: bad profile {exc.source}:", file=sys.stderr)
        for e in exc.errors:
            print(f"  {e}", file=sys.stderr)
        return 2
    except (UsageError, ValueError, OSError) as exc:
        print(f"ggdefender fleet run: {exc}", file=sys.stderr)
        return 2

    from .stream_job import JOB_NAME, JobConfig, JobError, build, read_progress

    scratch = tempfile.mkdtemp(prefix="ggdefender-fleet-run-")
    work = os.path.join(os.path.abspath(args.checkpoint_dir), "output") if args.checkpoint_dir else scratch
    progress_dir = os.path.join(scratch, "progress")
    os.makedirs(progress_dir)
    cfg = JobConfig(profile=profile.source, inputs=inputs, socket=args.socket, follow_seconds=args.follow,
                    out_dir=work,
                    progress_dir=progress_dir, model_path=args.model, custom_types=custom,
                    parallelism=args.parallelism, lateness_ms=int(args.allowed_lateness * 1000),
                    exact_limit=args.exact_limit,
                    checkpoint_dir=os.path.join(args.checkpoint_dir, "checkpoints") if args.checkpoint_dir else None,
                    checkpoint_interval_ms=int(args.checkpoint_interval * 1000), restore_from=restore)
    try:
        try:
            env = build(cfg)
            submitted = time.monotonic()
            client = env.execute_async(JOB_NAME)
        except JobError as exc:
            print(f"ggdefender fleet run: {exc}", file=sys.stderr)
            return 2
        status = _wait(client, progress_dir, started)
        job_seconds = time.monotonic() - submitted
        if status != "FINISHED":
            print(f"ggdefender fleet run: the job ended {status}", file=sys.stderr)
            return 1
        return _write_results(args, work, read_progress(progress_dir), time.monotonic() - started, job_seconds)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _wait(client: Any, progress_dir: str, started: float) -> str:
    from .stream_job import read_progress

    result = client.get_job_execution_result()
    try:
        while not result.done():
            print(_progress_line(read_progress(progress_dir), started), file=sys.stderr, flush=True)
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        client.cancel().result()
        return "CANCELED"
    try:
        result.result()
    except Exception as exc:  # py4j carries the job's failure
        print(f"ggdefender fleet run: {str(exc).splitlines()[0][:2000]}", file=sys.stderr)
        return "FAILED"
    return "FINISHED"


def _write_results(args: argparse.Namespace, work: str, p: dict, wall: float, job_seconds: float) -> int:
    violations = sorted(finished_lines(os.path.join(work, "violations")), key=_event_order)
    # from the first record parsed to the last work of any operator: the job's start is not throughput
    busy = p.get("last_at", 0) - p.get("first_at", 0)
    dropped = finished_lines(os.path.join(work, "dropped"))
    text = "".join(v + "\n" for v in violations)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    dropped_path: Optional[str] = args.dropped or (args.out + ".dropped.jsonl" if args.out else None)
    if dropped_path:
        with open(dropped_path, "w", encoding="utf-8") as fh:
            fh.write("".join(d + "\n" for d in dropped))
    stats = {"records": p.get("records", 0), "parsed": p.get("parsed", 0), "rejected": p.get("rejected", {}),
             "duplicates": p.get("duplicates", 0), "late": p.get("late", 0), "datapoints": p.get("datapoints", 0),
             "violations": len(violations), "wall_seconds": round(wall, 3), "job_seconds": round(job_seconds, 3),
             "processing_seconds": round(busy, 3),
             "reports_per_second": round(p.get("records", 0) / busy, 1) if busy > 0 else None,
             "parallelism": args.parallelism}
    stats_path = args.stats or (args.out + ".stats.json" if args.out else None)
    if stats_path:
        with open(stats_path, "w", encoding="utf-8") as fh:
            json.dump(stats, fh, indent=1)
    n_rejected = sum(stats["rejected"].values())
    n_dropped = stats["late"] + stats["duplicates"] + n_rejected
    print(f"fleet run: done: {stats['records']:,} records, {stats['violations']:,} violations, {n_dropped:,} "
          f"dropped (late {stats['late']}, duplicates {stats['duplicates']}, rejected {n_rejected})"
          + (f" -> {dropped_path}" if dropped_path and n_dropped else "")
          + f"; {stats['reports_per_second']} reports/s over {busy:.1f} s of processing ({job_seconds:.1f} s with "
            f"the job's start)", file=sys.stderr)
    return 0
