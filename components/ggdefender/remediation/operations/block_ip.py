"""block-ip: drop all traffic from and to an address or network, in this component's own firewall table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Context, Declaration, Failed, Outcome
from .firewall import IP_TARGET, Firewall, parse_target

if TYPE_CHECKING:
    from ..config import RemediationSettings

NAME = "block-ip"
DECLARATION = Declaration(
    name=NAME,
    summary="Drop all traffic from and to an address or network (not loopback, multicast, unspecified, or broader than /8 (v4) or /32 (v6)) in this component's own firewall table.",
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
        return Outcome(f"dry run: would block {net} (in and out) with {fw.tool}", facts)
    if fw.is_blocked(net):
        return Outcome(f"{net} was already blocked", dict(facts, action="none"))
    fw.block(net)
    if not fw.is_blocked(net):
        raise Failed(f"{net} does not show as blocked after adding it", facts)
    return Outcome(f"blocked {net} (in and out) with {fw.tool}", facts)
