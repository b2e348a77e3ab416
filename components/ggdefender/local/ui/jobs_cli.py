"""`ggdefender local jobs ...`: create, list, describe and cancel IoT jobs on a running local core.

    ggdefender local jobs create --root D --document F [--job-id ID] [--timeout-minutes M] [--retries N]
    ggdefender local jobs list --root D [--json]
    ggdefender local jobs describe --root D JOB_ID
    ggdefender local jobs cancel --root D JOB_ID [--force]

They talk to the running `ggdefender local run` through its control socket (local/ui/control.py); the
service behind them is local/cloud/jobs_service.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .cli import DEFAULT_ROOT
MAX_DOCUMENT_FILE_BYTES = 64 * 1024


def register(local_subparsers: argparse._SubParsersAction) -> None:
    jobs = local_subparsers.add_parser("jobs", help="IoT jobs for the local thing (offline IoT Jobs service)")
    sub = jobs.add_subparsers(dest="jobs_command", metavar="COMMAND", required=True)

    create = sub.add_parser("create", help="create a job from a job document file (queued for the local thing)")
    create.add_argument("--root", default=DEFAULT_ROOT)
    create.add_argument("--document", required=True, help="job document file (JSON), or - for stdin")
    create.add_argument("--job-id", help="job id (default: generated); 1-64 of [a-zA-Z0-9_-]")
    create.add_argument("--timeout-minutes", type=float, help="in-progress timeout (TIMED_OUT when it expires)")
    create.add_argument("--retries", type=int, default=0, help="re-queue FAILED/TIMED_OUT attempts up to N times")
    create.set_defaults(func=cmd_create)

    lst = sub.add_parser("list", help="jobs and the status of their latest execution")
    lst.add_argument("--root", default=DEFAULT_ROOT)
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.set_defaults(func=cmd_list)

    describe = sub.add_parser("describe", help="a job, its document and every execution with statusDetails")
    describe.add_argument("--root", default=DEFAULT_ROOT)
    describe.add_argument("job_id")
    describe.set_defaults(func=cmd_describe)

    cancel = sub.add_parser("cancel", help="cancel a job (an IN_PROGRESS execution only with --force)")
    cancel.add_argument("--root", default=DEFAULT_ROOT)
    cancel.add_argument("job_id")
    cancel.add_argument("--force", action="store_true")
    cancel.set_defaults(func=cmd_cancel)


def _request(root: str, command: str, args: dict) -> Any:
    from .control import ControlError, control_request

    try:
        return control_request(root, command, args)
    except ControlError as exc:
        print(f"ggdefender local jobs: {exc}", file=sys.stderr)
        return None


def _read_document(name: str) -> Any:
    try:
        if name == "-":
            text = sys.stdin.read(MAX_DOCUMENT_FILE_BYTES + 1)
        else:
            path = Path(name)
            if path.stat().st_size > MAX_DOCUMENT_FILE_BYTES:
                raise ValueError(f"{name} is larger than {MAX_DOCUMENT_FILE_BYTES} bytes")
            text = path.read_text(encoding="utf-8")
        if len(text) > MAX_DOCUMENT_FILE_BYTES:
            raise ValueError("document larger than 64 KiB")
        return json.loads(text)
    except (OSError, ValueError) as exc:
        print(f"ggdefender local jobs: cannot read job document {name}: {exc}", file=sys.stderr)
        return None


def cmd_create(args: argparse.Namespace) -> int:
    document = _read_document(args.document)
    if document is None:
        return 2
    request = {"document": document, "jobId": args.job_id, "maxRetries": args.retries}
    if args.timeout_minutes is not None:
        request["timeoutMinutes"] = args.timeout_minutes
    result = _request(args.root, "jobs-create", request)
    if result is None:
        return 1
    print(f"created job {result['jobId']} for {result['thingName']} "
          f"(execution {result['executionNumber']} {result['status']})")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    result = _request(args.root, "jobs-list", {})
    if result is None:
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if not result:
        print("no jobs")
        return 0
    print(f"{'JOB':40} {'THING':20} {'EXEC':>4} {'STATUS':12} DETAILS")
    for job in result:
        details = job.get("statusDetails") or {}
        note = details.get("reason") or details.get("summary") or ""
        print(f"{job['jobId']:40} {job['thingName']:20} {str(job['executionNumber']):>4} "
              f"{str(job['executionStatus']):12} {note[:80]}")
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    result = _request(args.root, "jobs-describe", {"jobId": args.job_id})
    if result is None:
        return 1
    print(json.dumps(result, indent=2))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    result = _request(args.root, "jobs-cancel", {"jobId": args.job_id, "force": args.force})
    if result is None:
        return 1
    print(f"canceled job {result['jobId']} (execution was {result['executionStatus']})")
    return 0
