"""set-config: change allow-listed keys of this component's own configuration (UpdateConfiguration over IPC).

Only keys listed in `Remediation.SetConfigAllowedKeys` ("Section/Key") may change, and never anything in
the Remediation or Supervisor sections (a job must not widen its own permissions). Values are scalars, and
a key that already holds a number/boolean/string only accepts the same kind. Before anything is written,
the section as it would be after the change is validated by the owning part's own parser (one rule, not a
copy), so a value the part would reject is REJECTED here instead of stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict

from ggdefender.settings import ConfigError

from ..config import FORBIDDEN_SET_CONFIG_SECTIONS
from .base import Context, Declaration, Failed, Outcome, Rejected

if TYPE_CHECKING:
    from ..config import RemediationSettings

NAME = "set-config"
DECLARATION = Declaration(
    name=NAME,
    summary="Change allow-listed keys (Remediation.SetConfigAllowedKeys) of this component's own configuration.",
    arguments={
        "type": "object", "additionalProperties": False, "required": ["section", "values"],
        "properties": {
            "section": {"type": "string", "pattern": "^[A-Z][A-Za-z0-9]{0,63}$"},
            "values": {
                "type": "object", "minProperties": 1, "maxProperties": 16,
                "propertyNames": {"pattern": "^[A-Za-z][A-Za-z0-9]{0,63}$"},
                "additionalProperties": {
                    "anyOf": [
                        {"type": "number"},
                        {"type": "boolean"},
                        {"type": "string", "maxLength": 256, "pattern": "^[^\\u0000-\\u001f]*$"},
                    ],
                },
            },
        },
    },
    arguments_required=True, on_interrupt="rerun")


def _collector(section: Any) -> None:
    from ggdefender.collector import config

    config.parse(section)


def _detect(section: Any) -> None:
    from ggdefender.detect import config

    config.parse(section)


def _plugins(section: Any) -> None:
    from ggdefender.plugins import host
    from ggdefender.plugins.builtin import BUILTINS
    from ggdefender.plugins.registry import Registry

    # built-ins only: installed plugins' code runs in the unprivileged part and is never imported here (this
    # process may be root); set-config changes scalar top-level keys, whose rules do not depend on them
    host.parse_section(section, Registry(builtins=dict(BUILTINS)))


# the parser each part applies to its section (imported when used: process A does not load the parts)
SECTION_VALIDATORS: Dict[str, Callable] = {"Collector": _collector, "Detect": _detect, "Plugins": _plugins}


def target(args: dict) -> str:
    return f"{args['section']}/{','.join(sorted(args['values']))}"


def validate(args: dict, settings: RemediationSettings) -> None:
    section = args["section"]
    if section in FORBIDDEN_SET_CONFIG_SECTIONS:
        raise ValueError(f"the {section} section can never be changed by a job")
    if section not in SECTION_VALIDATORS:
        raise ValueError(f"set-config can change only the {', '.join(SECTION_VALIDATORS)} sections, not {section}")
    for key in args["values"]:
        if f"{section}/{key}" not in settings.set_config_allowed_keys:
            raise ValueError(f"{section}/{key} is not in Remediation.SetConfigAllowedKeys "
                             f"({', '.join(settings.set_config_allowed_keys) or 'empty'})")


def _kind(value: Any) -> str:
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
    after = dict(current)
    after.update(values)
    try:
        SECTION_VALIDATORS[section](after)
    except ConfigError as exc:
        raise Rejected(f"{section} would be invalid with {'; '.join(changes)}: {exc}",
                       {"section": section}) from None
    facts = {"section": section, "changes": "; ".join(changes)}
    if ctx.dry_run:
        return Outcome(f"dry run: would set {section}: {'; '.join(changes)}", facts)
    try:
        ctx.ipc.update_config([section], values)
    except Exception as exc:
        raise Failed(f"UpdateConfiguration failed: {exc}") from None
    return Outcome(f"updated {section}: {'; '.join(changes)}", facts)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False
