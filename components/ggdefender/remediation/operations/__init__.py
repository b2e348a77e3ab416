"""The allow-listable remediation operations, one module each.

Each module has NAME, `target(args) -> str` (for the audit line), `run(args, ctx) -> Outcome` (raises
`Rejected`/`Failed`), and optionally `validate(args, settings)` (semantic checks beyond the JSON Schema,
raising ValueError; run before a job is accepted so bad arguments are REJECTED without side effects).
"""

from __future__ import annotations

import importlib

MODULES = {
    "stop-listener": "stop_listener",
    "kill-process": "kill_process",
    "block-ip": "block_ip",
    "unblock-ip": "unblock_ip",
    "set-config": "set_config",
    "restart-component": "restart_component",
    "collect-now": "collect_now",
    "reboot": "reboot",
}


def get(name: str):
    """The module implementing operation `name`; KeyError for unknown operations."""
    return importlib.import_module(f"{__name__}.{MODULES[name]}")
