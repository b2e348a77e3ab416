"""`ggdefender detect validate|replay`: check a security profile and try it on recorded reports.

`validate` ships to devices; `replay` (and its plot) is a developer tool in ggdefender.devtools, which the device
artifact leaves out, so there it is a clear error (cli.NOT_IN_ARTIFACT)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Tuple

from ggdefender.cli import NotInstalled, import_part
from ggdefender.settings import ConfigError

from . import metrics as M
from .profile import ProfileError, lint, read_profile_file
from .statistics import StatsConfig


def _custom_types(pairs: Any) -> Dict[str, str]:
    out = {}
    for pair in pairs or []:
        name, sep, t = pair.partition("=")
        if not sep or t not in M.CUSTOM_TYPES:
            raise ConfigError(f"--custom-metric {pair!r}: expected NAME=TYPE with TYPE one of "
                              f"{', '.join(M.CUSTOM_TYPES)}")
        out[name] = t
    return out


def _load_profiles(args: argparse.Namespace) -> Tuple[List[Any], Dict[str, str]]:
    types = _custom_types(args.custom_metric)
    return [read_profile_file(p, types) for p in args.profile], types


def cmd_validate(args: argparse.Namespace) -> int:
    status = 0
    types = _custom_types(args.custom_metric)
    for path in args.profile:
        try:
            prof = read_profile_file(path, types)
        except ProfileError as exc:
            status = 1
            print(f"{path}: INVALID")
            for e in exc.errors:
                print(f"  - {e}")
            continue
        print(f"{path}: valid profile {prof.name} with {len(prof.behaviors)} behavior(s)")
        for b in prof.behaviors:
            print(f"  - {b.name}: {b.metric} {b.criteria_type.lower()}"
                  + (f", {b.duration} s windows" if b.duration else "")
                  + ("" if b.spec.side != "cloud" else " (cloud-side: evaluated by `ggdefender local` only)"))
        for w in lint(prof):
            print(f"  warning: {w}")
    return status


def cmd_replay(args: argparse.Namespace) -> int:
    replay_tool = import_part("detect replay", "ggdefender.devtools.replay")
    format_event, load_records, replay = replay_tool.format_event, replay_tool.load_records, replay_tool.replay

    profiles, types = _load_profiles(args)
    for prof in profiles:
        for w in lint(prof):
            print(f"warning: {prof.name}/{w}", file=sys.stderr)
    records = load_records(args.reports)
    stats = StatsConfig(warmup=args.warmup, ml_warmup=args.ml_warmup)
    result = replay(profiles, records, stats=stats, thing=args.thing, custom_types=types,
                    keep_series=bool(args.plot))
    if args.json:
        for e in result.events:
            print(json.dumps(e, separators=(",", ":")))
    else:
        print(f"# {result.reports} report(s), {result.datapoints} datapoint(s), {len(result.events)} event(s)")
        for e in result.events:
            print(format_event(e))
        if not result.events:
            print("# no violations")
    if args.plot:
        from ggdefender.devtools.plot import plot

        plot(result, args.plot, title=", ".join(p.name for p in profiles))
        print(f"# plot written to {args.plot}", file=sys.stderr)
    return 0


def _run(fn):
    def wrapper(args):
        try:
            return fn(args)
        except (ProfileError, ConfigError, ValueError, OSError, NotInstalled) as exc:
            print(f"ggdefender detect: {exc}", file=sys.stderr)
            return 2
    return wrapper


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("detect", help="validate security profiles and replay reports through them",
                                   description=__doc__)
    sub = parser.add_subparsers(dest="detect_command", metavar="ACTION")
    parser.set_defaults(func=lambda a: (parser.print_help(), 2)[1])

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--profile", action="append", required=True, metavar="FILE",
                        help="CreateSecurityProfile JSON file (repeatable)")
    common.add_argument("--custom-metric", action="append", metavar="NAME=TYPE",
                        help="declare a custom metric's type: number, number-list, string-list, ip-address-list")

    v = sub.add_parser("validate", parents=[common], help="validate profiles like ValidateSecurityProfileBehaviors")
    v.set_defaults(func=_run(cmd_validate))

    r = sub.add_parser("replay", parents=[common],
                       help="evaluate profiles against recorded reports (developer tool, not on devices)")
    r.add_argument("--reports", required=True, metavar="FILE|DIR",
                   help="reports.jsonl kept by `ggdefender local`, a JSON-lines file, or a folder of reports")
    r.add_argument("--plot", metavar="OUT.png", help="draw each behavior's metric, threshold and alarm periods")
    r.add_argument("--json", action="store_true", help="print the violation events as JSON lines")
    r.add_argument("--thing", help="thing name for the events (default: from the kept reports, else 'replay')")
    r.add_argument("--warmup", type=int, default=StatsConfig.warmup, metavar="N",
                   help="datapoints of history before a statistical threshold applies (default %(default)s)")
    r.add_argument("--ml-warmup", type=int, default=StatsConfig.ml_warmup, metavar="N",
                   help="datapoints of history before ML behaviors alarm (default %(default)s)")
    r.set_defaults(func=_run(cmd_replay))
