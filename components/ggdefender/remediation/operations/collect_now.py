"""collect-now: ask the collector (process B) for a fresh metrics report at once, and wait for its answer.

A typed call over the private relay between A and B (`Ipc.collect_now`, ipc_port.SupervisorPort), not a
round-trip through the Greengrass bus; the local topics `ggdefender/collector/commands` / `events` stay the
door for other components (docs/architecture.md). The answer is `report-published` (reportId, topic) or
`report-failed` (reason).
"""

from __future__ import annotations

import uuid

from ggdefender.ipc import IpcUnavailable
from ggdefender.ipc_port import SupervisorPort

from .base import Context, Declaration, Failed, Outcome

NAME = "collect-now"
DECLARATION = Declaration(
    name=NAME,
    summary="Ask the collector for a Device Defender report right away and wait for it.",
    arguments={
        "type": "object", "additionalProperties": False,
        "properties": {"timeoutSeconds": {"type": "number", "minimum": 1, "maximum": 120}},
    },
    arguments_required=False, on_interrupt="rerun")


def target(args: dict) -> str:
    return "collector"


def run(args: dict, ctx: Context) -> Outcome:
    wait = min(float(args.get("timeoutSeconds", 30)), max(1.0, ctx.remaining()))
    if ctx.dry_run:
        return Outcome("dry run: would ask the collector for a report now", {})
    if ctx.ipc is None:
        raise Failed("no Greengrass IPC connection")
    ipc: SupervisorPort = ctx.ipc
    request_id = f"remediation-{uuid.uuid4().hex[:12]}"
    try:
        answer = ipc.collect_now(request_id, wait)
    except TimeoutError:
        raise Failed(f"the collector did not answer collect-now within {wait:g}s", {"requestId": request_id})
    except IpcUnavailable as exc:
        raise Failed(f"the collector cannot be asked: {exc}", {"requestId": request_id})
    if answer.get("event") == "report-published":
        facts = {"reportId": str(answer.get("reportId", "")), "topic": str(answer.get("topic", ""))}
        return Outcome(f"report {facts['reportId']} published", facts)
    raise Failed(f"the collector could not publish a report: {answer.get('reason', answer)}")
