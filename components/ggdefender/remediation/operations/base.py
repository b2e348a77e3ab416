"""What every remediation operation shares: its outcome type, the two failure kinds, and the run context.

`Rejected` means the request can never succeed as written (bad argument, protected target, operation not
allowed, tool missing) and maps to the job status REJECTED; `Failed` means it may succeed on a retry
(timeout, a process that would not die, the collector not answering) and maps to FAILED.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from ggdefender.ipc_port import SupervisorPort

audit_log = logging.getLogger("ggdefender.audit")


@dataclasses.dataclass(frozen=True)
class Declaration:
    """What an operation module says about itself (its `DECLARATION`); every list of operations is derived
    from these (operations/__init__.py), so adding an operation is adding one module."""

    name: str  # the job document's "operation"
    summary: str  # one line for users: the description of its arguments in job_document.schema.json
    arguments: dict  # JSON Schema of the step's "arguments" (may $ref "#/$defs/signal" and "#/$defs/grace")
    arguments_required: bool  # a step must carry "arguments"
    # a step a restart interrupted: "rerun" (safe to repeat: its result is a state), "done" (the restart
    # was its effect), "check" (the module's after_restart() decides), "fail" (not known to be safe)
    on_interrupt: str
    allowed_by_default: bool = True  # in the default Remediation.AllowedOperations
    # it signals processes through psutil: unavailable (jobs REJECTED) where psutil is not installed
    needs_psutil: bool = False

    def __post_init__(self):
        if self.on_interrupt not in ("rerun", "done", "check", "fail"):
            raise ValueError(f"{self.name}: on_interrupt {self.on_interrupt!r}")


class OperationError(Exception):
    status = "FAILED"
    step: Any = None  # the plan step refused in a preflight (set by the executor, for the audit)

    def __init__(self, reason: str, details: Optional[dict] = None):
        super().__init__(reason)
        self.reason = reason
        self.details = dict(details or {})


class Rejected(OperationError):
    status = "REJECTED"


class Failed(OperationError):
    status = "FAILED"


@dataclasses.dataclass
class Outcome:
    """A successful (or dry-run) result: one human summary plus short key/value facts for statusDetails."""

    summary: str
    details: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Context:
    settings: Any  # RemediationSettings
    safety: Any  # SafetyPolicy
    ipc: Optional[SupervisorPort] = None  # process A's (None in pure tests)
    dry_run: bool = False
    job: str = "-"  # job id / local request id, for the audit trail
    timeout: float = 30.0
    started: float = dataclasses.field(default_factory=time.monotonic)
    audit_sink: Optional[Callable[[dict], None]] = None
    cancel: Optional[threading.Event] = None  # set when the job execution was cancelled: stop at once

    @property
    def deadline(self) -> float:
        return self.started + self.timeout

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def audit(self, operation: str, target: str, result: str, detail: str = "") -> None:
        """One audit line per action: who asked (job), what, on which target, and how it ended."""
        record = {"job": self.job, "operation": operation, "target": target, "result": result,
                  "dryRun": self.dry_run}
        if detail:
            record["detail"] = detail[:512]
        audit_log.info("AUDIT %s", json.dumps(record, sort_keys=True))
        if self.audit_sink is not None:
            self.audit_sink(record)
