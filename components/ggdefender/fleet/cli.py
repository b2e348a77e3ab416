"""`ggdefender fleet`: the fleet tier's commands (not in the device artifact). `fleet act` runs the Act handler
once over violations in a file, with the caller's AWS credentials (e.g. to replay violations the Lambda
function could not act on)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, List

MAX_INPUT_BYTES = 64 * 1024 * 1024


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("fleet", help="the fleet tier (runs in your AWS account, not on devices)")
    fleet = parser.add_subparsers(dest="fleet_command", metavar="FLEET_COMMAND")
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
    act = fleet.add_parser("act", help="violations -> Security Hub findings and remediation (docs/fleet.md)")
    act.add_argument("violations", help="a JSON file: a list of violations, or one violation per line ('-': stdin)")
    act.add_argument("--settings", help="the handler's settings as a JSON file (docs/fleet.md); default: none")
    act.add_argument("--region", help="the AWS region of the clients (default: the settings' Findings.Region, "
                                      "else the AWS configuration's)")
    act.set_defaults(func=run_act)


def read_violations(text: str) -> List[Any]:
    """A JSON list, or JSON lines; ValueError naming the line that is not JSON."""
    stripped = text.strip()
    if stripped.startswith("["):
        data = json.loads(stripped)
        return list(data)
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError as exc:
                raise ValueError(f"line {n}: not JSON ({exc})") from None
    return out


def run_act(args: argparse.Namespace) -> int:
    import boto3

    from . import act

    try:
        if args.violations == "-":
            text = sys.stdin.read(MAX_INPUT_BYTES + 1)
        else:
            with open(args.violations, encoding="utf-8") as fh:
                text = fh.read(MAX_INPUT_BYTES + 1)
        if len(text) > MAX_INPUT_BYTES:
            raise ValueError(f"larger than {MAX_INPUT_BYTES} bytes")
        violations = read_violations(text)
        raw_settings: Any = {}
        if args.settings:
            with open(args.settings, encoding="utf-8") as fh:
                raw_settings = json.load(fh)
        settings = act.parse_settings(raw_settings)
    except (OSError, ValueError) as exc:  # ConfigError is a ValueError
        print(f"ggdefender fleet act: {exc}", file=sys.stderr)
        return 2
    region = args.region or settings.findings.region or None
    clients = act.Clients(boto3.client("securityhub", region_name=region), boto3.client("iot", region_name=region))
    report = act.handle(violations, clients, settings)
    json.dump(report, sys.stdout, indent=1)
    print()
    return 1 if report["failed"] or report["rejected"] else 0
