"""collect-now: ask the collector (process B) for a fresh metrics report at once, and wait for its answer.

Protocol (docs/architecture.md): publish {"command": "collect-now", "requestId"} on local topic
`ggdefender/collector/commands`; the collector answers on `ggdefender/collector/events` with
`report-published` (reportId, topic) or `report-failed` (reason).
"""

from __future__ import annotations

import threading
import uuid

from ggdefender import topics

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
COMMANDS_TOPIC = topics.COLLECTOR_COMMANDS
EVENTS_TOPIC = topics.COLLECTOR_EVENTS


def target(args: dict) -> str:
    return "collector"


def run(args: dict, ctx: Context) -> Outcome:
    wait = min(float(args.get("timeoutSeconds", 30)), max(1.0, ctx.remaining()))
    if ctx.dry_run:
        return Outcome("dry run: would ask the collector for a report now", {})
    if ctx.ipc is None:
        raise Failed("no Greengrass IPC connection")
    request_id = f"remediation-{uuid.uuid4().hex[:12]}"
    answer: dict = {}
    done = threading.Event()

    def on_event(topic, payload):
        if isinstance(payload, dict) and payload.get("requestId") == request_id:
            answer.update(payload)
            done.set()

    sub = ctx.ipc.subscribe_local(EVENTS_TOPIC, on_event)  # subscribe before asking: no lost answer
    try:
        ctx.ipc.publish_local(COMMANDS_TOPIC, {"command": "collect-now", "requestId": request_id})
        if not done.wait(wait):
            raise Failed(f"the collector did not answer collect-now within {wait:g}s", {"requestId": request_id})
    finally:
        sub.close()
    if answer.get("event") == "report-published":
        facts = {"reportId": str(answer.get("reportId", "")), "topic": str(answer.get("topic", ""))}
        return Outcome(f"report {facts['reportId']} published", facts)
    raise Failed(f"the collector could not publish a report: {answer.get('reason', answer)}")
