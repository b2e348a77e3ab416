"""The `Supervisor` configuration section of process A: its settings, their parsing, and the part that judges
them when they change (docs/configuration.md)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from ggdefender import settings as s

log = logging.getLogger("ggdefender.supervisor")

SUPERVISOR_NOTE = "Supervisor settings take effect when the component restarts"


@dataclass(frozen=True)
class SupervisorSettings:
    collector_user: str = ""
    collector_group: str = ""
    restart_initial_backoff: float = 1.0
    restart_max_backoff: float = 60.0
    healthy_after: float = 300.0
    stop_timeout: float = 10.0
    log_level: str = "INFO"
    ipc_retry_budget: float = 300.0  # = ipc.DEFAULT_RETRY_BUDGET (not imported: ipc is heavier than this module)
    # B idles at ~22 MiB and peaks at ~30 MiB (10,000 sockets, a job; docs/performance.md): 40 leaves headroom
    # while a leak is stopped long before it eats the device
    collector_memory_limit_mib: float = 40.0


def parse_settings(section: Any) -> SupervisorSettings:
    section = s.as_section(section, "Supervisor")
    errors: List[str] = []
    values: Dict[str, Any] = {}
    readers = {
        "CollectorUser": ("collector_user", lambda v: s.as_str(v, "CollectorUser", max_length=64, allow_empty=True)),
        "CollectorGroup": ("collector_group",
                           lambda v: s.as_str(v, "CollectorGroup", max_length=64, allow_empty=True)),
        "RestartInitialBackoffSeconds": ("restart_initial_backoff",
                                         lambda v: s.as_float(v, "RestartInitialBackoffSeconds", 0.1, 600)),
        "RestartMaxBackoffSeconds": ("restart_max_backoff",
                                     lambda v: s.as_float(v, "RestartMaxBackoffSeconds", 0.1, 3600)),
        "HealthyAfterSeconds": ("healthy_after", lambda v: s.as_float(v, "HealthyAfterSeconds", 1, 86400)),
        "StopTimeoutSeconds": ("stop_timeout", lambda v: s.as_float(v, "StopTimeoutSeconds", 1, 300)),
        "LogLevel": ("log_level", lambda v: s.as_choice(v, "LogLevel", ("DEBUG", "INFO", "WARNING", "ERROR"))),
        "IpcRetryBudgetSeconds": ("ipc_retry_budget", lambda v: s.as_float(v, "IpcRetryBudgetSeconds", 5, 86400)),
        "CollectorMemoryLimitMiB": ("collector_memory_limit_mib",
                                    lambda v: s.as_float(v, "CollectorMemoryLimitMiB", 16, 4096)),
    }
    problems = s.Problems()
    problems.keys(section, readers, "Supervisor", strict=False)
    for warning in problems.warnings:
        log.warning("%s", warning)
    for key, value in section.items():
        if key not in readers:
            continue
        if value is None:
            continue
        attr, fn = readers[key]
        try:
            values[attr] = fn(value)
        except s.ConfigError as exc:
            errors.append(f"Supervisor.{exc}")
    if errors:
        raise s.ConfigError("; ".join(errors))
    out = SupervisorSettings(**values)
    if out.restart_max_backoff < out.restart_initial_backoff:
        raise s.ConfigError("Supervisor.RestartMaxBackoffSeconds: below RestartInitialBackoffSeconds")
    return out


class SupervisorSection:
    """The `Supervisor` part of process A: judged when it changes (health verdict, last good copy) so an operator
    sees a bad value at once, though the supervisor applies it only at its next start."""

    section = "Supervisor"

    def __init__(self) -> None:
        self.settings: Optional[SupervisorSettings] = None  # the last accepted one

    def reconfigure(self, section: Any) -> None:
        self.settings = parse_settings(section)

    def start(self) -> None:
        """Nothing to begin: the settings are read once, at start-up."""

    def close(self) -> None:
        """Nothing to end."""
