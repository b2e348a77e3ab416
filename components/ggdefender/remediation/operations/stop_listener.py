"""stop-listener: terminate the process(es) listening on a TCP or UDP port, then verify the port is closed.

Every owner is vetted by the safety policy before anything is signalled, so a port shared with a
protected process is refused as a whole (nothing half-done).
"""

from __future__ import annotations

import ipaddress
import os
from typing import Optional

import psutil

from ..safety import signal_from_name
from . import process_control
from .base import Context, Failed, Outcome, Rejected

NAME = "stop-listener"
_WILDCARDS = {"0.0.0.0", "::"}


def target(args: dict) -> str:
    addr = args.get("address")
    return f"{args.get('protocol', 'tcp')}/{args['port']}" + (f"@{addr}" if addr else "")


def find_listeners(port: int, protocol: str, address: Optional[str] = None) -> tuple:
    """(owner pids, count of sockets whose owner is not visible to us) for listeners on the port."""
    kind = "tcp" if protocol == "tcp" else "udp"
    want = ipaddress.ip_address(address) if address else None
    pids, hidden = set(), 0
    for conn in psutil.net_connections(kind=kind):
        if not conn.laddr or conn.laddr.port != port:
            continue
        if protocol == "tcp" and conn.status != psutil.CONN_LISTEN:
            continue
        if protocol == "udp" and conn.raddr:
            continue  # a connected UDP socket is a client, not a listener
        if want is not None and conn.laddr.ip not in _WILDCARDS:
            try:
                if ipaddress.ip_address(conn.laddr.ip.split("%")[0]) != want:
                    continue
            except ValueError:
                continue
        if conn.pid is None:
            hidden += 1
        else:
            pids.add(conn.pid)
    return pids, hidden


def run(args: dict, ctx: Context) -> Outcome:
    port, protocol = args["port"], args.get("protocol", "tcp")
    address = args.get("address")
    sig = signal_from_name(args.get("signal", "SIGTERM"))
    grace = float(args.get("gracePeriodSeconds", ctx.settings.default_grace_period_seconds))
    tgt = target(args)
    pids, hidden = find_listeners(port, protocol, address)
    if hidden and not pids:
        raise Rejected(f"{tgt} is open but its owner is not visible to this listener (uid {os.geteuid()}; "
                       "run the component as root to remediate other users' processes)")
    procs = []
    for pid in sorted(pids):
        try:
            proc = psutil.Process(pid)
            refusal = ctx.safety.refusal_for(proc)
        except psutil.NoSuchProcess:
            continue
        if refusal:
            raise Rejected(f"{tgt}: {refusal}", {"port": str(port), "pid": str(pid)})
        procs.append(proc)
    if not procs:
        return Outcome(f"nothing listens on {tgt}; nothing to do", {"port": str(port), "protocol": protocol,
                                                                    "action": "none"})
    owners = process_control.describe(procs)
    facts = {"port": str(port), "protocol": protocol, "pids": owners}
    if ctx.dry_run:
        return Outcome(f"dry run: would send {sig.name} to {owners} listening on {tgt}, SIGKILL after {grace:g}s",
                       facts)
    facts.update(process_control.terminate(procs, sig, grace, ctx))
    closed = process_control.wait_until(lambda: not any(find_listeners(port, protocol, address)), ctx)
    facts["portClosed"] = "true" if closed else "false"
    if not closed:
        left, hidden = find_listeners(port, protocol, address)
        raise Failed(f"{tgt} is still open after stopping {owners} (now owned by {sorted(left) or hidden})", facts)
    return Outcome(f"stopped {owners}; {tgt} is closed", facts)

