"""`ggdefender fleet`: the fleet tier's commands (not in the device artifact). `fleet act` runs the Act handler
once over violations in a file, with the caller's AWS credentials (e.g. to replay violations the Lambda
function could not act on); `fleet quarantine-setup` creates the quarantine thing group and its continuous job."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

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
    setup = fleet.add_parser("quarantine-setup", help="create the quarantine thing group and its continuous job")
    setup.add_argument("document", help="the continuous job's remediation document (JSON, docs/jobs.md)")
    setup.add_argument("--settings", required=True, help="the handler's settings (JSON) with Remediation.Quarantine")
    setup.add_argument("--region", help="the AWS region of the client (default: as for `fleet act`)")
    setup.set_defaults(func=run_quarantine_setup)
    from . import simulate_cli

    simulate_cli.register(fleet)
    from . import baselines_cli

    baselines_cli.register(fleet)
    from . import package

    package.register(fleet)
    from . import run_cli

    run_cli.register(fleet)


def _settings(path: Any) -> Any:
    from . import act

    raw: Any = {}
    if path:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    return act.parse_settings(raw)


def run_quarantine_setup(args: argparse.Namespace) -> int:
    import boto3

    from . import act

    try:
        settings = _settings(args.settings)
        with open(args.document, encoding="utf-8") as fh:
            doc = json.loads(fh.read(MAX_INPUT_BYTES))
        act.check_document(doc)
        if settings.quarantine is None:
            raise ValueError("Remediation.Quarantine is not set in the settings")
    except (OSError, ValueError) as exc:
        print(f"ggdefender fleet quarantine-setup: {exc}", file=sys.stderr)
        return 2
    region = args.region or settings.findings.region or None
    clients = act.Clients(None, boto3.client("iot", region_name=region))
    json.dump(act.setup_quarantine(clients, settings, doc), sys.stdout, indent=1)
    print()
    return 0


def run_act(args: argparse.Namespace) -> int:
    import boto3

    from . import act

    try:
        from .json_input import read_json_values

        violations = read_json_values(args.violations, MAX_INPUT_BYTES)
        settings = _settings(args.settings)
    except (OSError, ValueError) as exc:  # ConfigError is a ValueError
        print(f"ggdefender fleet act: {exc}", file=sys.stderr)
        return 2
    region = args.region or settings.findings.region or None
    clients = act.Clients(boto3.client("securityhub", region_name=region), boto3.client("iot", region_name=region))
    report = act.handle(violations, clients, settings)
    json.dump(report, sys.stdout, indent=1)
    print()
    return 1 if report["failed"] or report["rejected"] else 0
