"""restart-component: ask the nucleus to restart a component (IPC RestartComponent).

Only components in `Remediation.RestartableComponents` (default: this component itself). Restarting this
component ends the listener's own process; the job journal records the step as started first, and the
restarted listener finishes the execution as SUCCEEDED (the restart is the step's effect).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import COMPONENT_NAME
from .base import Context, Declaration, Failed, Outcome, Rejected

if TYPE_CHECKING:
    from ..config import RemediationSettings

NAME = "restart-component"
DECLARATION = Declaration(
    name=NAME,
    summary="Ask the nucleus to restart a component in Remediation.RestartableComponents (IPC RestartComponent).",
    arguments={
        "type": "object", "additionalProperties": False,
        "properties": {"component": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,128}$"}},
    },
    # restarting this component ends the listener's process: the restart was the step's effect
    arguments_required=False, on_interrupt="done")


def target(args: dict) -> str:
    return args.get("component") or "(this component)"


def resolve(args: dict) -> str:
    return args.get("component") or COMPONENT_NAME


def validate(args: dict, settings: RemediationSettings) -> None:
    name = resolve(args)
    if name not in settings.restartable_components:
        raise ValueError(f"component {name!r} is not in Remediation.RestartableComponents "
                         f"({', '.join(settings.restartable_components) or 'empty'})")


def run(args: dict, ctx: Context) -> Outcome:
    name = resolve(args)
    try:
        validate(args, ctx.settings)
    except ValueError as exc:
        raise Rejected(str(exc)) from None
    if ctx.dry_run:
        return Outcome(f"dry run: would restart {name}", {"component": name})
    if ctx.ipc is None:
        raise Failed("no Greengrass IPC connection")
    try:
        status = ctx.ipc.restart_component(name)
    except Exception as exc:
        raise Failed(f"RestartComponent({name}) failed: {exc}") from None
    if "FAIL" in status.upper():
        raise Failed(f"RestartComponent({name}) answered {status}")
    return Outcome(f"restart of {name} requested ({status})", {"component": name, "restartStatus": status})
