"""set-config: change allow-listed keys of this component's own configuration (UpdateConfiguration over IPC).

Only keys listed in `Remediation.SetConfigAllowedKeys` ("Section/Key") may change, and never anything in
the Remediation or Supervisor sections (a job must not widen its own permissions). Values are scalars, and
a key that already holds a number/boolean/string only accepts the same kind. The owning part validates
the value again when it reloads and keeps its last good configuration if it disagrees.
"""

from __future__ import annotations

from ..config import FORBIDDEN_SET_CONFIG_SECTIONS
from .base import Context, Failed, Outcome, Rejected

NAME = "set-config"


def target(args: dict) -> str:
    return f"{args['section']}/{','.join(sorted(args['values']))}"


def validate(args: dict, settings) -> None:
    section = args["section"]
    if section in FORBIDDEN_SET_CONFIG_SECTIONS:
        raise ValueError(f"the {section} section can never be changed by a job")
    for key in args["values"]:
        if f"{section}/{key}" not in settings.set_config_allowed_keys:
            raise ValueError(f"{section}/{key} is not in Remediation.SetConfigAllowedKeys "
                             f"({', '.join(settings.set_config_allowed_keys) or 'empty'})")


def _kind(value) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def run(args: dict, ctx: Context) -> Outcome:
    try:
        validate(args, ctx.settings)
    except ValueError as exc:
        raise Rejected(str(exc)) from None
    if ctx.ipc is None:
        raise Failed("no Greengrass IPC connection")
    section, values = args["section"], dict(args["values"])
    try:
        current = ctx.ipc.get_config([section]) or {}
    except Exception as exc:  # IPC trouble is transient
        raise Failed(f"cannot read configuration section {section}: {exc}") from None
    if not isinstance(current, dict):
        raise Rejected(f"configuration node {section} is not an object")
    changes = []
    for key, value in values.items():
        old = current.get(key)
        # numbers may be stored as strings ("300"): those accept numbers too
        old_kind = "number" if isinstance(old, str) and _is_number(old) else _kind(old)
        if old is not None and old_kind != _kind(value) and not (old_kind == "number" and _is_number(value)):
            raise Rejected(f"{section}/{key} holds a {old_kind}; refusing to store a {_kind(value)}")
        changes.append(f"{key}={old!r}->{value!r}")
    facts = {"section": section, "changes": "; ".join(changes)}
    if ctx.dry_run:
        return Outcome(f"dry run: would set {section}: {'; '.join(changes)}", facts)
    try:
        ctx.ipc.update_config([section], values)
    except Exception as exc:
        raise Failed(f"UpdateConfiguration failed: {exc}") from None
    return Outcome(f"updated {section}: {'; '.join(changes)}", facts)


def _is_number(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False
