"""stop-listener: terminate every process listening on a TCP or UDP port, then verify the port is closed.

Every owner of every matching socket (IPv4 and IPv6, a parent and its forked workers alike) is found through
socket inodes (socket_owners) and vetted by the safety policy before anything is signalled, so a port
shared with a protected process is refused as a whole (nothing half-done). Owners that appear while the
first ones are stopped (a worker forked meanwhile) are vetted and stopped in a further round, a bounded
number of times; the step succeeds only when nothing listens on the port any more.
"""

from __future__ import annotations

import os
from typing import Optional

from .. import process_library
from ..safety import signal_from_name
from . import process_control, socket_owners
from .base import Context, Declaration, Failed, Outcome, Rejected

NAME = "stop-listener"
DECLARATION = Declaration(
    name=NAME,
    summary="Stop every process listening on a TCP or UDP port (after a grace period, SIGKILL), then verify the "
            "port is closed.",
    arguments={
        "type": "object", "additionalProperties": False, "required": ["port"],
        "properties": {
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "protocol": {"enum": ["tcp", "udp"], "default": "tcp"},
            "address": {"type": "string", "maxLength": 64, "pattern": "^[0-9A-Fa-f:.]+$",
                        "description": "Only listeners bound to this address (or to a wildcard address)."},
            "signal": {"$ref": "#/$defs/signal"},
            "gracePeriodSeconds": {"$ref": "#/$defs/grace"},
        },
    },
    arguments_required=True, on_interrupt="rerun", needs_psutil=True)
MAX_ROUNDS = 3
CLOSE_WAIT_SECONDS = 2.0


def target(args: dict) -> str:
    addr = args.get("address")
    return f"{args.get('protocol', 'tcp')}/{args['port']}" + (f"@{addr}" if addr else "")


def _vetted_owners(port: int, protocol: str, address: Optional[str], tgt: str, ctx: Context) -> list:
    """Every live owner of every listening socket on the port, all vetted; Rejected (nothing touched) when
    one is protected or a socket's owner cannot be seen."""
    psutil = process_library.require()
    inodes = socket_owners.listening_inodes(port, protocol, address)
    held, unowned = socket_owners.owners(inodes)
    if unowned:
        raise Rejected(f"{tgt}: {len(unowned)} listening socket(s) have no owner visible to this listener "
                       f"(uid {os.geteuid()}; kernel sockets, or another user's while not running as root)",
                       {"port": str(port)})
    procs = []
    for pid in sorted(held):
        try:
            proc = psutil.Process(pid)
            refusal = ctx.safety.refusal_for(proc)
        except psutil.NoSuchProcess:
            continue
        if refusal:
            raise Rejected(f"{tgt}: {refusal}; no owner was signalled", {"port": str(port), "pid": str(pid)})
        procs.append(proc)
    return procs


def _listening(port: int, protocol: str, address: Optional[str]) -> bool:
    return bool(socket_owners.listening_inodes(port, protocol, address))


def run(args: dict, ctx: Context) -> Outcome:
    port, protocol = args["port"], args.get("protocol", "tcp")
    address = args.get("address")
    sig = signal_from_name(args.get("signal", "SIGTERM"))
    grace = float(args.get("gracePeriodSeconds", ctx.settings.default_grace_period_seconds))
    tgt = target(args)
    procs = _vetted_owners(port, protocol, address, tgt, ctx)
    if not procs:
        return Outcome(f"nothing listens on {tgt}; nothing to do", {"port": str(port), "protocol": protocol,
                                                                    "action": "none"})
    owners = process_control.describe(procs)
    facts = {"port": str(port), "protocol": protocol, "pids": owners}
    if ctx.dry_run:
        return Outcome(f"dry run: would send {sig.name} to {owners} listening on {tgt}, SIGKILL after {grace:g}s",
                       facts)
    stopped, killed = [], []
    for round_ in range(MAX_ROUNDS):
        result = process_control.terminate(procs, sig, grace, ctx)
        stopped += [p for p in procs if p not in stopped]
        if result.get("killedAfterGrace"):
            killed.append(result["killedAfterGrace"])
        facts.update(signal=result["signal"], signalled=process_control.describe(stopped))
        if killed:
            facts["killedAfterGrace"] = ",".join(killed)
        # the kernel drops a socket as its last holder exits: a short wait, then look for new owners
        closed = process_control.wait_until(lambda: not _listening(port, protocol, address), ctx,
                                            limit=CLOSE_WAIT_SECONDS)
        if closed:
            facts["portClosed"] = "true"
            facts["pids"] = process_control.describe(stopped)
            return Outcome(f"stopped {facts['pids']}; {tgt} is closed", facts)
        # still open: new owners (forked meanwhile) are vetted as a whole again before any is signalled
        procs = [p for p in _vetted_owners(port, protocol, address, tgt, ctx) if p not in stopped]
        if not procs or ctx.remaining() <= 0:
            break
    facts["portClosed"] = "false"
    left = socket_owners.owners(socket_owners.listening_inodes(port, protocol, address))[0]
    raise Failed(f"{tgt} is still open after stopping {process_control.describe(stopped)} "
                 f"(owned by {sorted(left) or 'nobody visible'})", facts)
