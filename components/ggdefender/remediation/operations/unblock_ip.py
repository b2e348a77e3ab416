"""unblock-ip: remove an address or network that block-ip added (only from this component's own table)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Context, Declaration, Failed, Outcome
from .firewall import IP_TARGET, Firewall, parse_target

if TYPE_CHECKING:
    from ..config import RemediationSettings

NAME = "unblock-ip"
DECLARATION = Declaration(
    name=NAME,
    summary="Remove an address or network that block-ip added (only from this component's own table).",
    arguments=IP_TARGET, arguments_required=True, on_interrupt="rerun")


def target(args: dict) -> str:
    return str(args["address"])


def validate(args: dict, settings: RemediationSettings) -> None:
    parse_target(args["address"])


def run(args: dict, ctx: Context) -> Outcome:
    net = parse_target(args["address"])
    fw = Firewall(ctx)
    facts = {"address": str(net), "backend": fw.tool, "table": ctx.settings.firewall_table}
    if ctx.dry_run:
        return Outcome(f"dry run: would unblock {net} with {fw.tool}", facts)
    fw.unblock(net)
    if fw.is_blocked(net):
        raise Failed(f"{net} is still blocked after removing it", facts)
    return Outcome(f"unblocked {net}", facts)
