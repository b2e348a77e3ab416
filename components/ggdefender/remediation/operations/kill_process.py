"""kill-process: signal a process by pid or by exact name, with a grace period before SIGKILL."""

from __future__ import annotations

from types import ModuleType

from .. import process_library
from ..safety import signal_from_name
from . import process_control
from .base import Context, Declaration, Outcome, Rejected

NAME = "kill-process"
DECLARATION = Declaration(
    name=NAME,
    summary="Signal a process by pid or by exact name, with a grace period before SIGKILL.",
    arguments={
        "type": "object", "additionalProperties": False,
        "oneOf": [{"required": ["pid"]}, {"required": ["name"]}],
        "properties": {
            "pid": {"type": "integer", "minimum": 2, "maximum": 4194304},
            "name": {"type": "string", "pattern": "^[A-Za-z0-9._+@:-]{1,64}$"},
            "all": {"type": "boolean", "description": "With name: signal every process of that name (at most 16)."},
            "signal": {"$ref": "#/$defs/signal"},
            "gracePeriodSeconds": {"$ref": "#/$defs/grace"},
            "killAfterGrace": {"type": "boolean", "default": True},
        },
    },
    arguments_required=True, on_interrupt="rerun", needs_psutil=True)
MAX_MATCHES = 16


def target(args: dict) -> str:
    return f"pid {args['pid']}" if "pid" in args else f"name {args['name']}"


def _by_name(psutil: ModuleType, name: str) -> list:
    found = []
    for proc in psutil.process_iter(["name"]):
        if proc.info.get("name") == name:
            found.append(proc)
    return found


def run(args: dict, ctx: Context) -> Outcome:
    psutil = process_library.require()
    sig = signal_from_name(args.get("signal", "SIGTERM"))
    grace = float(args.get("gracePeriodSeconds", ctx.settings.default_grace_period_seconds))
    if "pid" in args:
        try:
            procs = [psutil.Process(args["pid"])]
        except psutil.NoSuchProcess:
            raise Rejected(f"no process with pid {args['pid']}") from None
    else:
        procs = _by_name(psutil, args["name"])
        if not procs:
            raise Rejected(f"no process named {args['name']!r}")
        if len(procs) > 1 and not args.get("all", False):
            raise Rejected(f"{len(procs)} processes are named {args['name']!r} "
                           f"({process_control.describe(procs[:8])}); set \"all\": true to signal every one")
        if len(procs) > MAX_MATCHES:
            raise Rejected(f"{len(procs)} processes are named {args['name']!r}; at most {MAX_MATCHES} per step")
    vetted = []
    for proc in procs:
        try:
            refusal = ctx.safety.refusal_for(proc)
        except psutil.NoSuchProcess:
            continue
        if refusal:
            raise Rejected(refusal, {"pid": str(proc.pid)})
        vetted.append(proc)
    if not vetted:
        raise Rejected(f"{target(args)}: the process exited before it could be signalled")
    who = process_control.describe(vetted)
    if ctx.dry_run:
        return Outcome(f"dry run: would send {sig.name} to {who}, SIGKILL after {grace:g}s", {"pids": who})
    facts = {"pids": who}
    escalate = args.get("killAfterGrace", True)
    facts.update(process_control.terminate(vetted, sig, grace, ctx, escalate=escalate))
    return Outcome(f"sent {sig.name} to {who}" + ("; all exited" if escalate else ""), facts)
