"""The remediation listener: IoT Jobs over Greengrass IPC, plus Detect's mitigation requests (MitigationGate).

Runs inside process A (`ggdefender run`) as `RemediationListener(ipc, thing, state_dir).run(stop_event)`.
One loop thread owns the pure `JobsMachine` and the journal; IPC callbacks only enqueue events; one worker
thread executes job steps and local requests, one at a time, through the same `Executor` (same validation,
allow-list and safety checks). `python -m ggdefender.remediation.listener` runs it alone (tests, debugging).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from ggdefender import health, ratelog, statefile
from ggdefender.part import PartHost
from ggdefender.statefile import atomic_write_json

from . import config as rconfig
from . import documents, jobs, operations
from .config import REQUEST_ID, RESULTS_TOPIC
from .executor import Executor, Result, reject
from .operations.base import Context
from .safety import SafetyPolicy

if TYPE_CHECKING:
    from ggdefender.ipc_port import SupervisorPort

log = logging.getLogger("ggdefender.remediation")
_publish_log = ratelog.RateLimitedLog(log)

JOURNAL_FILE = "remediation-journal.json"
_TICK = 0.25
IDLE_POLL_SECONDS = 600.0  # re-check the queue now and then in case a notification was lost
CANCEL_POLL_SECONDS = 30.0  # while a job runs, check this often that it was not cancelled (lost notification)
# One execution at a time per process, even across listener restarts by the supervisor: a worker left
# finishing a step from a crashed listener instance must end before a new instance resumes that job.
_EXECUTION_LOCK = threading.Lock()


class RemediationListener:
    """The `Remediation` part (part.Part) of process A. Its host (the supervisor's, or its own when it runs
    alone) dispatches the section; the listener asks for it on its loop thread, which owns the Jobs machine."""

    section = "Remediation"

    def __init__(self, ipc: SupervisorPort, thing: str, state_dir: Union[str, os.PathLike], *, host: Optional[PartHost] = None):
        self.ipc = ipc
        self.thing = thing
        self.state_dir = Path(state_dir)
        self.events: queue.Queue = queue.Queue()
        self.work: queue.Queue = queue.Queue()
        self.settings: Optional[rconfig.RemediationSettings] = None
        self.pending_local = 0
        self._subs: list = []
        self._job_subs: list = []  # the IoT Jobs topics: held only while Remediation.Enabled (or draining)
        self._jobs_on: Optional[bool] = None  # None until the first look at Remediation.Enabled
        self._cancels: dict = {}  # (jobId, executionNumber) -> Event set when the service ended it
        self._stop = threading.Event()
        self._own_host = host is None  # run alone: its own host, which follows the section while run() runs
        if host is None:
            host = PartHost(ipc, str(self.state_dir), [self])
        else:
            host.replace(self)  # a new incarnation after a failure: it runs no section yet
        self._host = host
        self._accepting = threading.Event()  # submit_mitigation is open while the loop runs

    # -- configuration ------------------------------------------------------------------------------
    def _load_settings(self) -> None:
        # a rejected section keeps the last good one, from the state folder after a restart (the host's LastGood)
        self._host.configure_part(self, self.ipc.get_config([self.section]))
        if self.settings is None:
            log.error("%s; jobs will be REJECTED until it is fixed", self.config_error)

    @property
    def config_error(self) -> Optional[str]:
        """Why jobs are rejected: no section was ever accepted (the defaults could be wider than what the
        operator configured, so they are not guessed); None once one is in use."""
        if self.settings is not None:
            return None
        error = self._host.last_good(self.section).error
        return f"Remediation configuration is invalid: {error}" if error else "remediation is not configured"

    def reconfigure(self, section: Any) -> None:
        """Validate and apply the `Remediation` section; ConfigError (nothing changed) when it is invalid.
        Called by the host (on its configuration thread after a change); the loop thread, which owns the Jobs
        machine, then follows Remediation.Enabled."""
        new = rconfig.parse(section)  # ConfigError: nothing changed
        self.settings = new
        log.info("remediation settings: allowed operations %s", ", ".join(new.allowed_operations))
        self.events.put(("config",))

    # -- journal ------------------------------------------------------------------------------------------
    @property
    def journal_path(self) -> Path:
        return self.state_dir / JOURNAL_FILE

    def _load_journal(self) -> jobs.Journal:
        # a journal of the wrong shape is moved aside (statefile.read_json): the listener starts empty rather
        # than crash-loop on it with new jobs left QUEUED
        return statefile.read_json(str(self.journal_path), jobs.Journal.from_json, jobs.Journal,
                                   what="remediation job journal", log=log)

    def _save_journal(self, journal: jobs.Journal) -> None:
        atomic_write_json(str(self.journal_path), journal.to_json())

    # -- run ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Nothing to begin here: run() is the loop (on the supervisor's remediation thread)."""

    def close(self) -> None:
        """End run() (its own stop event); run() releases everything on its way out."""
        self._stop.set()

    def run(self, stop_event: threading.Event) -> None:
        self._load_settings()
        unavailable = operations.unavailable()  # e.g. no psutil here: said in health; jobs using one are REJECTED
        health.report(self.ipc, "remediation", {"unavailableOperations": unavailable} if unavailable else None)
        settings = self.settings or rconfig.RemediationSettings()
        journal = self._load_journal()
        machine = jobs.JobsMachine(
            self.thing, journal, claim_mode=settings.claim_mode, reply_timeout=settings.reply_timeout_seconds,
            retry_initial=settings.retry_initial_seconds, retry_max=settings.retry_max_seconds,
            idle_poll=IDLE_POLL_SECONDS, cancel_poll=CANCEL_POLL_SECONDS)
        worker = threading.Thread(target=self._worker, name="remediation-worker", daemon=True)
        worker.start()
        try:
            self._subscribe()
            self._accepting.set()
            self._follow_enabled(machine)
            while not stop_event.is_set() and not self._stop.is_set():
                try:
                    event = self.events.get(timeout=_TICK)
                except queue.Empty:
                    event = None
                if event is not None:
                    self._handle(machine, event)
                self._apply(machine, machine.tick(time.time()))
                if not self._jobs_on and self._job_subs and not machine.busy:
                    self._close(self._job_subs)  # disabled, and the last execution is reported
                    log.info("remediation disabled: the last job is reported; no longer listening for jobs")
        finally:
            self._accepting.clear()
            self._stop.set()
            for event in list(self._cancels.values()):
                event.set()  # a handler still running is stopped with its process group, not left behind
            self.work.put(None)
            self._close(self._job_subs)
            self._close(self._subs)

    @staticmethod
    def _close(subs: list) -> None:
        for sub in subs:
            try:
                sub.close()
            except Exception:
                pass
        subs.clear()

    def _follow_enabled(self, machine: jobs.JobsMachine) -> None:
        """Remediation.Enabled, live: true listens for jobs (again); false takes no new job, while one already
        running finishes and is reported, then the jobs topics are dropped. An invalid section with no last
        good one keeps listening, so each job is REJECTED with the reason rather than left QUEUED."""
        enabled = self.settings is None or self.settings.enabled
        if enabled and not self._jobs_on:
            self._jobs_on = True
            if not self._job_subs:
                self._subscribe_jobs()
            log.info("remediation enabled: listening for jobs")
            self._apply(machine, machine.resume(time.time()))
        elif not enabled and self._jobs_on is not False:
            self._jobs_on = False
            self._apply(machine, machine.pause(time.time()))
            log.warning("remediation is disabled (Remediation.Enabled=false): taking no new jobs%s",
                        "; the running one finishes and is reported" if machine.busy else "")

    def _subscribe_jobs(self) -> None:
        enqueue_iot = lambda topic, payload: self.events.put(("iot", topic, payload))  # noqa: E731
        # reply topics first, so no reply can arrive before its subscription exists
        for topic_filter in reversed(jobs.subscription_filters(self.thing)):
            self._job_subs.append(self.ipc.subscribe_iot(topic_filter, enqueue_iot))

    def _subscribe(self) -> None:
        # no local requests topic: pub/sub carries no sender identity (docs/security.md); Detect's mitigation
        # arrives through the supervisor's MitigationGate (submit_mitigation), third parties use IoT Jobs
        if self._own_host:  # under the supervisor, process A's host follows every section
            self._subs.append(self._host.follow(self.ipc))

    def _handle(self, machine: jobs.JobsMachine, event: tuple) -> None:
        kind = event[0]
        now = time.time()
        if kind == "iot":
            self._apply(machine, machine.on_message(event[1], event[2], now))
        elif kind == "step":
            _, job_id, number, index, phase, ack, marker = event
            self._apply(machine, machine.on_step(job_id, number, index, phase, now, marker=marker))
            ack.set()
        elif kind == "done":
            _, job_id, number, result = event
            self._cancels.pop((job_id, number), None)
            self._apply(machine, machine.on_execution_done(job_id, number, result.status, result.details, now))
        elif kind == "request":
            self._accept_request(event[1], event[2])
        elif kind == "local-done":
            self.pending_local -= 1
        elif kind == "config":  # a section was applied (reconfigure)
            self._follow_enabled(machine)

    def _apply(self, machine: jobs.JobsMachine, actions: list) -> None:
        for action in actions:
            if isinstance(action, jobs.Publish):
                try:
                    self.ipc.publish_iot(action.topic, json.dumps(action.payload, separators=(",", ":")))
                    _publish_log.recovered("publish", "job messages are published again")
                except Exception as exc:  # the machine's reply timeout retries it
                    # said once while it lasts (nucleus lite refuses every publish while IoT Core is unreachable)
                    _publish_log.failed("publish", "publishing to %s failed: %s", action.topic, exc)
            elif isinstance(action, jobs.SaveJournal):
                self._save_journal(machine.journal)
            elif isinstance(action, jobs.Execute):
                self._cancels[(action.job_id, action.execution_number)] = threading.Event()
                self.work.put(("job", action))
            elif isinstance(action, jobs.Cancel):
                cancel = self._cancels.get((action.job_id, action.execution_number))
                if cancel is not None:
                    log.warning("job %s#%s was ended by the service (%s): stopping it", action.job_id,
                                action.execution_number, action.status)
                    cancel.set()

    # -- Detect's mitigation requests (checked by the supervisor's MitigationGate) ---------------------------
    def submit_mitigation(self, msg: dict, on_result: Callable[[dict], None]) -> Optional[str]:
        """Queue a request the gate has accepted (any thread); returns why it cannot be queued, else None.
        `msg` is {"requestId", "operation", "arguments", "reason", "violationId"}, built by the gate from A's
        own configuration; `on_result` gets the result payload (also published on RESULTS_TOPIC)."""
        if not self._accepting.is_set():
            return "the remediation listener is not running"
        if self.settings is None or not self.settings.enabled:
            return self.config_error or "remediation is disabled (Remediation.Enabled)"
        self.events.put(("request", msg, on_result))
        return None

    def _accept_request(self, msg: Any, on_result: Callable[[dict], None]) -> None:
        request_id = msg.get("requestId") if isinstance(msg, dict) else None
        if not isinstance(request_id, str) or not REQUEST_ID.match(request_id):  # the gate checked; defence
            log.warning("ignoring a remediation request without a valid requestId")
            return
        settings = self.settings
        limit = settings.max_pending_local_requests if settings else 1
        if self.pending_local >= limit:
            self._reply_local(msg, Result("FAILED", {"reason": f"busy: {self.pending_local} requests pending"}),
                              on_result)
            return
        self.pending_local += 1
        self.work.put(("request", (msg, on_result)))

    def _reply_local(self, request: dict, result: Result, on_result: Optional[Callable[[dict], None]]) -> None:
        payload = {"requestId": request.get("requestId"), "operation": request.get("operation"),
                   "status": result.status, "statusDetails": jobs.sanitize_details(result.details)}
        if request.get("violationId") is not None:
            payload["violationId"] = str(request.get("violationId"))[:128]
        if on_result is not None:
            try:
                on_result(dict(payload))
            except Exception:
                log.exception("delivering the result of request %s failed", payload["requestId"])
        try:  # informational, for observers (docs/jobs.md)
            self.ipc.publish_local(RESULTS_TOPIC, payload)
        except Exception as exc:
            log.warning("publishing the result of request %s failed: %s", payload["requestId"], exc)

    # -- the worker: one execution at a time -------------------------------------------------------------
    def _executor(self) -> Optional[Executor]:
        settings = self.settings
        if settings is None:
            return None
        return Executor(settings, SafetyPolicy(settings), self.ipc)

    def _worker(self) -> None:
        while True:
            item = self.work.get()
            if item is None or self._stop.is_set():
                return
            kind, payload = item
            with _EXECUTION_LOCK:
                self._work_item(kind, payload)

    def _work_item(self, kind: str, payload: Any) -> None:
        try:
            if kind == "job":
                result = self._run_job(payload)
                self.events.put(("done", payload.job_id, payload.execution_number, result))
            else:
                msg, on_result = payload
                try:
                    self._reply_local(msg, self._run_request(msg), on_result)
                finally:
                    self.events.put(("local-done",))
        except Exception:  # never let one bad execution kill the worker
            log.exception("remediation worker failed on a %s", kind)
            if kind == "job":
                self.events.put(("done", payload.job_id, payload.execution_number,
                                 Result("FAILED", {"reason": "internal error in the remediation worker"})))

    def _run_job(self, action: jobs.Execute) -> Result:
        label = f"{action.job_id}#{action.execution_number}"
        executor = self._executor()
        if executor is None:
            return reject(self.config_error or "remediation is not configured")
        try:
            plan = documents.parse(action.document, executor.settings)
        except documents.DocumentError as exc:
            log.warning("job %s rejected: %s", label, exc)
            _audit_rejected_document(label, str(exc))
            return reject(str(exc))

        def on_step(index: int, phase: str, marker: Optional[dict] = None) -> None:
            # wait until the journal is on disk: a step may end this very process (restart-component, reboot)
            ack = threading.Event()
            self.events.put(("step", action.job_id, action.execution_number, index, phase, ack, marker))
            ack.wait(10)

        log.info("job %s: running %d step(s) (%s%s)", label, len(plan.all_steps()), plan.format,
                 ", dry run" if plan.dry_run else "")
        result = executor.execute(plan, label, done_steps=action.done_steps, interrupted=action.interrupted,
                                  on_step=on_step, cancel=self._cancels.get((action.job_id, action.execution_number)),
                                  marker=action.marker)
        log.info("job %s: %s %s", label, result.status, result.details.get("reason") or
                 result.details.get("summary", ""))
        return result

    def _run_request(self, msg: dict) -> Result:
        label = f"local:{msg['requestId']}"
        executor = self._executor()
        if executor is None:
            return reject(self.config_error or "remediation is not configured")
        try:
            plan = documents.parse(documents.request_to_document(msg), executor.settings)
        except documents.DocumentError as exc:
            _audit_rejected_document(label, str(exc))
            return reject(str(exc))
        log.info("request %s (%s): %s", label, msg.get("violationId") or "no violation id", msg.get("reason") or "")
        return executor.execute(plan, label)


def _audit_rejected_document(label: str, reason: str) -> None:
    """A document refused before any step exists still leaves an audit line (someone asked for it)."""
    Context(settings=None, safety=None, job=label).audit("document", "-", "REJECTED", reason)


def main() -> int:
    """Run the listener on its own (normally it runs inside `ggdefender run`)."""
    import signal

    from ggdefender.ipc import Ipc

    logging.basicConfig(level=os.environ.get("GGDEFENDER_LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    ipc = Ipc().connect()
    state_dir = statefile.private_dir(statefile.state_dir())
    try:
        RemediationListener(ipc, ipc.thing_name, state_dir).run(stop)
    finally:
        ipc.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
