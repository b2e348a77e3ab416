"""Run a validated `Plan`: pre-flight every step as a dry run, then the steps for real, one at a time.

The pre-flight pass runs each operation in dry-run mode, which performs all of its checks (protected
processes, privileges, firewall tool, handler files, users) without changing anything; only when every
step passes does the first real step run, so a job that can never succeed is REJECTED having done
nothing. Jobs (from IoT Jobs) and local mitigation requests (from Detect) both come through here.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from . import handlers, operations
from .config import DEVICE_CLIENT_OPERATIONS
from .operations import reboot
from .operations.base import Context, OperationError, Outcome

if TYPE_CHECKING:
    from ggdefender.ipc_port import SupervisorPort

    from .config import RemediationSettings
    from .documents import Plan, Step
    from .safety import SafetyPolicy

log = logging.getLogger("ggdefender.remediation")


@dataclasses.dataclass
class Result:
    status: str  # SUCCEEDED | FAILED | REJECTED
    details: dict  # raw; jobs.sanitize_details() bounds it for the API


class Executor:
    def __init__(self, settings: RemediationSettings, safety: SafetyPolicy, ipc: Optional[SupervisorPort] = None,
                 audit_sink: Optional[Callable[[dict], None]] = None):
        self.settings = settings
        self.safety = safety
        self.ipc = ipc
        self.audit_sink = audit_sink

    def _context(self, label: str, dry_run: bool, step: Step, cancel: Optional[threading.Event] = None) -> Context:
        if step.operation in DEVICE_CLIENT_OPERATIONS:
            timeout = self.settings.handler_timeout_seconds
        elif step.operation == "reboot":
            timeout = self.settings.reboot_timeout_seconds + reboot.COMMAND_TIMEOUT
        else:
            timeout = self.settings.operation_timeout_seconds
        return Context(settings=self.settings, safety=self.safety, ipc=self.ipc, dry_run=dry_run, job=label,
                       timeout=timeout, audit_sink=self.audit_sink, cancel=cancel)

    def _run_step(self, step: Step, plan: Plan, ctx: Context) -> Outcome:
        if step.operation in DEVICE_CLIENT_OPERATIONS:
            return handlers.run_step(step, ctx, plan.include_stdout)
        return operations.get(step.operation).run(step.arguments, ctx)

    def preflight(self, plan: Plan, label: str, steps: Sequence[Step]) -> None:
        for step in steps:
            try:
                if step.operation in DEVICE_CLIENT_OPERATIONS:
                    handlers.preflight(step, self.settings)
                else:
                    self._run_step(step, plan, self._context(label, True, step))
            except OperationError as exc:
                exc.step = step  # so the refusal is audited and reported against its step
                raise

    def execute(self, plan: Plan, label: str, *, done_steps: int = 0, interrupted: Optional[int] = None,
                on_step: Optional[Callable[..., None]] = None,
                cancel: Optional[threading.Event] = None, marker: Optional[dict] = None) -> Result:
        """Run the plan. `done_steps` steps finished before a restart; `interrupted` is the index of a step
        that had started when the process stopped (None if none), `marker` what it recorded then (a reboot's
        boot id); `cancel`, once set, stops the running step (a handler's whole process group) and runs no
        further step. `on_step(index, phase[, marker])` records progress (a reboot step passes its marker)."""
        steps = plan.all_steps()
        base = {"format": plan.format, "steps": str(len(steps))}
        if plan.dry_run:
            base["dryRun"] = "true"
        if plan.notes:
            base["notes"] = "; ".join(plan.notes)
        summaries = []
        facts: dict = {}
        start = done_steps
        if interrupted is not None and interrupted == done_steps:
            step = steps[interrupted]
            # what a restart does to the step is the operation's own declaration; handlers are never re-run
            on_interrupt = ("fail" if step.operation in DEVICE_CLIENT_OPERATIONS
                            else operations.declaration(step.operation).on_interrupt)
            if on_interrupt == "done":
                summaries.append(f"{step.name}: restarted (the listener came back after the restart)")
                start = interrupted + 1
                if on_step:
                    on_step(interrupted, "done")
            elif on_interrupt == "check":
                # e.g. a reboot ended the process that requested it: done if this is a new boot
                try:
                    ctx = self._context(label, False, step, cancel)
                    outcome = operations.get(step.operation).after_restart(marker, ctx)
                except OperationError as exc:
                    self._audit(label, step, exc.status, exc.reason, dry_run=False)
                    return Result(exc.status, dict(base, reason=exc.reason, failedStep=step.name,
                                                   operation=step.operation, **_str_facts(exc.details)))
                self._audit(label, step, "SUCCEEDED", outcome.summary, dry_run=False)
                summaries.append(f"{step.name}: {outcome.summary}")
                facts.update(_str_facts(outcome.details))
                start = interrupted + 1
                if on_step:
                    on_step(interrupted, "done")
            elif on_interrupt != "rerun":
                reason = (f"step {step.name!r} ({step.operation}) was interrupted by a restart and is not re-run "
                          "automatically; re-run the job if it is still needed")
                self._audit(label, step, "FAILED", reason, dry_run=False)
                return Result("FAILED", dict(base, reason=reason, failedStep=step.name))
        pending = steps[start:]
        try:
            self.preflight(plan, label, pending)
        except OperationError as exc:
            details = dict(base, reason=exc.reason, **_str_facts(exc.details))
            step = getattr(exc, "step", None)
            if step is not None:
                # a refused target (protected process, missing privilege, bad handler) is an audited event too
                self._audit(label, step, exc.status, exc.reason, dry_run=plan.dry_run)
                details.update(failedStep=step.name, operation=step.operation)
            return Result(exc.status, details)
        except Exception as exc:  # a bug must still end the job cleanly
            log.exception("pre-flight of %s failed unexpectedly", label)
            return Result("FAILED", dict(base, reason=f"internal error during pre-flight: {exc}"))

        failed: Optional[tuple] = None
        # a failing step ends the loop, so a Device Client finalStep (last in steps) runs only after success
        for index in range(start, len(steps)):
            step = steps[index]
            if cancel is not None and cancel.is_set():
                reason = f"cancelled before step {step.name!r}"
                self._audit(label, step, "CANCELED", reason, plan.dry_run)
                failed = ("FAILED", step, reason)
                break
            ctx = self._context(label, plan.dry_run, step, cancel)
            if on_step and not plan.dry_run:
                if step.operation == "reboot":
                    on_step(index, "started", reboot.marker())  # journaled and reported before the request
                else:
                    on_step(index, "started")
            try:
                outcome = self._run_step(step, plan, ctx)
                self._audit(label, step, "DRY-RUN" if plan.dry_run else "SUCCEEDED", outcome.summary, plan.dry_run)
                summaries.append(f"{step.name}: {outcome.summary}")
                facts.update(_str_facts(outcome.details))
            except OperationError as exc:
                self._audit(label, step, exc.status, exc.reason, plan.dry_run)
                facts.update(_str_facts(exc.details))
                if exc.status == "FAILED" and step.ignore_failure:
                    summaries.append(f"{step.name}: failed (ignored): {exc.reason}")
                else:
                    failed = (exc.status, step, exc.reason)
                    if on_step and not plan.dry_run:
                        on_step(index, "done")
                    break
            except Exception as exc:
                log.exception("step %s of %s raised", step.name, label)
                self._audit(label, step, "FAILED", f"internal error: {exc}", plan.dry_run)
                failed = ("FAILED", step, f"internal error: {exc}")
                break
            if on_step and not plan.dry_run:
                on_step(index, "done")
        details = dict(base)
        details.update(facts)
        if summaries:
            details["summary"] = " | ".join(summaries)
        if failed:
            status, step, reason = failed
            details.update(reason=reason, failedStep=step.name, operation=step.operation)
            return Result(status, details)
        last = steps[-1] if steps else None
        if last is not None:
            details.setdefault("operation", last.operation if len(steps) == 1 else "multiple")
        return Result("SUCCEEDED", details)

    def _audit(self, label: str, step: Step, result: str, detail: str, dry_run: bool) -> None:
        try:
            target = step.target()
        except Exception:
            target = "?"
        Context(settings=self.settings, safety=self.safety, dry_run=dry_run, job=label,
                audit_sink=self.audit_sink).audit(step.operation, target, result, detail)


def _str_facts(facts: dict) -> dict:
    return {str(k): str(v) for k, v in (facts or {}).items() if v is not None and str(v) != ""}


def reject(reason: str, **extra: Any) -> Result:
    return Result("REJECTED", dict(reason=reason, **{k: str(v) for k, v in extra.items()}))

