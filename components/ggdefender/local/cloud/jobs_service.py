"""The AWS IoT Jobs service, offline: what `ggdefender local` answers on the Jobs MQTT API.

Jobs are created from a document (CLI `ggdefender local jobs create`, the control channel, or
`create_job()` in tests) for the local thing and queued. Devices talk to it exactly as to AWS:
`$aws/things/T/jobs/{get,start-next,J/get,J/update}` with `/accepted` and `/rejected` replies (echoing
`clientToken`), `notify` (sent when an execution is queued or becomes terminal) and `notify-next` (sent
only when the head of the pending list changes). Version checks (`expectedVersion` -> VersionMismatch),
state transitions (only IN_PROGRESS/SUCCEEDED/FAILED/REJECTED from a device, nothing after a terminal
state -> InvalidStateTransition), statusDetails limits (-> InvalidRequest), in-progress and step
timeouts (-> TIMED_OUT), retries of FAILED/TIMED_OUT attempts (new executionNumber) and cancellation
follow the service's documented behaviour. Namespaced topics (`aws-gg-deployment`) are not served.
State is kept in `<root>/cloud/jobs/state.json`, so jobs survive a restart of the local core.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from ggdefender import jobs_protocol
# the protocol's names and limits are shared with the device's listener (remediation/jobs.py)
from ggdefender.jobs_protocol import DETAIL_KEY, DEVICE_STATUSES, JOB_ID, MAX_DOCUMENT_CHARS, TERMINAL
from ggdefender.statefile import atomic_write_json, need, read_json
from .services import Declaration

log = logging.getLogger("ggdefender.local.cloud.jobs_service")

MAX_REQUEST_BYTES = 128 * 1024


_EXECUTION_FIELDS: Dict[str, Union[type, Tuple[type, ...]]] = {"jobId": str, "thingName": str, "executionNumber": int, "status": str,
                     "statusDetails": dict, "queuedAt": (int, float), "lastUpdatedAt": (int, float),
                     "versionNumber": int}


def _check_state(data: Any) -> dict:
    """<root>/cloud/jobs/state.json: every job and every execution attempt with the fields the service reads."""
    need(data, dict, "the jobs state")
    jobs = need(data.get("jobs"), dict, "jobs")
    for job_id, job in jobs.items():
        need(job, dict, f"jobs[{job_id!r}]")
        need(job.get("thing"), str, f"jobs[{job_id!r}].thing")
        need(job.get("status"), str, f"jobs[{job_id!r}].status")
        need(job.get("createdAt"), (int, float), f"jobs[{job_id!r}].createdAt")
        if "document" not in job:
            raise ValueError(f"jobs[{job_id!r}] has no document")
    executions = need(data.get("executions"), dict, "executions")
    for key, attempts in executions.items():
        need(attempts, list, f"executions[{key!r}]")
        for i, e in enumerate(attempts):
            need(e, dict, f"executions[{key!r}][{i}]")
            for name, kinds in _EXECUTION_FIELDS.items():
                need(e.get(name), kinds, f"executions[{key!r}][{i}].{name}")
            if e["jobId"] not in jobs:
                raise ValueError(f"executions[{key!r}][{i}] names unknown job {e['jobId']!r}")
    return {"jobs": jobs, "executions": executions}


class JobsError(ValueError):
    """A control-channel or API misuse (bad document, unknown job); the message says what."""


class _Reject(Exception):
    def __init__(self, code: str, message: str, state: Optional[dict] = None):
        super().__init__(message)
        self.code, self.message, self.state = code, message, state


def _is_control_char(ch: str) -> bool:
    import unicodedata
    return unicodedata.category(ch).startswith("C")


class JobsService:
    def __init__(self, core: Any, root_dir: Any, view: Any = None, *, tick_seconds: float = 0.5):
        self.core = core
        self.view = view
        self.thing = core.thing_name
        self.dir = Path(root_dir) / "cloud" / "jobs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "state.json"
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.jobs: dict = {}
        self.executions: dict = {}  # "thing/jobId" -> [attempts, oldest first]
        self._load()
        self._unsubscribe = [core.subscribe_iot(f, self._on_request)
                             for f in jobs_protocol.SERVICE_REQUEST_FILTERS]
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._timeouts, args=(tick_seconds,), name="local-jobs-timeouts",
                                       daemon=True)
        self._timer.start()

    # -- persistence -----------------------------------------------------------------------------------------
    def _load(self) -> None:
        # a state of the wrong shape is moved aside (statefile.read_json) and the service starts empty
        data = read_json(str(self.path), _check_state, lambda: {"jobs": {}, "executions": {}},
                         what="local jobs state", log=log)
        self.jobs, self.executions = data["jobs"], data["executions"]

    def _save(self) -> None:
        atomic_write_json(str(self.path), {"jobs": self.jobs, "executions": self.executions}, indent=1)

    def close(self) -> None:
        self._stop.set()
        for unsubscribe in self._unsubscribe:
            try:
                unsubscribe()
            except Exception:
                pass
        self._timer.join(5)

    def _note(self, text: str, level: str = "info") -> None:
        log.info("%s", text)
        if self.view is not None:
            try:
                self.view.note("jobs", text, level=level)
            except Exception:
                pass

    # -- queries -----------------------------------------------------------------------------------------------
    def _attempts(self, thing: str, job_id: str) -> list:
        return self.executions.get(f"{thing}/{job_id}", [])

    def _latest(self, thing: str, job_id: str) -> Optional[dict]:
        attempts = self._attempts(thing, job_id)
        return attempts[-1] if attempts else None

    def _pending(self, thing: str) -> list:
        """Non-terminal executions: IN_PROGRESS first, then QUEUED, each in queue order."""
        latest = [a[-1] for k, a in self.executions.items() if k.startswith(thing + "/") and a]
        running = sorted((e for e in latest if e["status"] == "IN_PROGRESS"), key=lambda e: e["queuedAt"])
        queued = sorted((e for e in latest if e["status"] == "QUEUED"), key=lambda e: e["queuedAt"])
        return running + queued

    def _head(self, thing: str) -> Optional[tuple]:
        pending = self._pending(thing)
        return (pending[0]["jobId"], pending[0]["executionNumber"], pending[0]["status"]) if pending else None

    def _execution(self, e: dict, include_document: bool = True) -> dict:
        out = {k: e[k] for k in ("jobId", "thingName", "status", "queuedAt", "lastUpdatedAt", "versionNumber",
                                 "executionNumber")}
        out["statusDetails"] = dict(e.get("statusDetails") or {})
        if e.get("startedAt") is not None:
            out["startedAt"] = e["startedAt"]
        deadline = e.get("inProgressDeadline")
        if e["status"] == "IN_PROGRESS" and deadline:
            out["approximateSecondsBeforeTimedOut"] = max(0, int(deadline - time.time()))
        if include_document:
            out["jobDocument"] = self.jobs[e["jobId"]]["document"]
        return out

    @staticmethod
    def _summary(e: dict) -> dict:
        out = {k: e[k] for k in ("jobId", "queuedAt", "lastUpdatedAt", "versionNumber", "executionNumber")}
        if e.get("startedAt") is not None:
            out["startedAt"] = e["startedAt"]
        return out

    @staticmethod
    def _state(e: dict) -> dict:
        return {"status": e["status"], "statusDetails": dict(e.get("statusDetails") or {}),
                "versionNumber": e["versionNumber"]}

    # -- notifications -------------------------------------------------------------------------------------------
    def _publish(self, topic: str, payload: dict) -> None:
        self.core.publish_iot(topic, json.dumps(payload, separators=(",", ":")).encode())

    def _notify(self, thing: str, head_before: Optional[tuple], list_changed: bool) -> None:
        now = int(time.time())
        if list_changed:
            pending = self._pending(thing)
            jobs: dict = {}
            for status in ("IN_PROGRESS", "QUEUED"):
                items = [self._summary(e) for e in pending if e["status"] == status][:10]
                if items:
                    jobs[status] = items
            self._publish(jobs_protocol.notify(thing), {"timestamp": now, "jobs": jobs})
        head_after = self._head(thing)
        head_key = lambda h: h[:2] if h else None  # noqa: E731 - a status change of the same head is no change
        if head_key(head_before) != head_key(head_after):
            payload: dict = {"timestamp": now}
            if head_after:
                latest = self._latest(thing, head_after[0])
                assert latest is not None  # the head is one of the thing's executions
                payload["execution"] = self._execution(latest)
            self._publish(jobs_protocol.notify_next(thing), payload)

    # -- control API (CLI, tests) -----------------------------------------------------------------------------
    def create_job(self, document: Any, job_id: Optional[str] = None, *, thing: Optional[str] = None,
                   timeout_minutes: Optional[float] = None, max_retries: int = 0) -> dict:
        if isinstance(document, (bytes, bytearray)):
            document = document.decode("utf-8")
        if isinstance(document, str):
            if len(document) > MAX_DOCUMENT_CHARS:
                raise JobsError(f"document is {len(document)} characters; the limit is {MAX_DOCUMENT_CHARS}")
            try:
                document = json.loads(document)
            except ValueError as exc:
                raise JobsError(f"document is not valid JSON: {exc}") from None
        if not isinstance(document, dict):
            raise JobsError("document must be a JSON object")
        size = len(json.dumps(document, separators=(",", ":")))
        if size > MAX_DOCUMENT_CHARS:
            raise JobsError(f"document is {size} characters; the limit is {MAX_DOCUMENT_CHARS}")
        job_id = job_id or time.strftime("job-%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        if not JOB_ID.match(job_id):
            raise JobsError(f"job id {job_id!r} must be 1-64 characters of [a-zA-Z0-9_-]")
        if timeout_minutes is not None and not (0 < float(timeout_minutes) <= 10080):
            raise JobsError("timeout must be more than 0 and at most 10080 minutes")
        if not (0 <= int(max_retries) <= 10):
            raise JobsError("retries must be 0-10")
        thing = thing or self.thing
        with self.lock:
            if job_id in self.jobs:
                raise JobsError(f"job {job_id} already exists")
            self.jobs[job_id] = {"jobId": job_id, "document": document, "thing": thing, "status": "IN_PROGRESS",
                                 "createdAt": int(time.time()),
                                 "timeoutMinutes": float(timeout_minutes) if timeout_minutes else None,
                                 "maxRetries": int(max_retries)}
            head = self._head(thing)
            execution = self._queue(job_id, thing, 1)
            self._notify(thing, head, True)
            self._save()
            self.changed.notify_all()
        self._note(f"job {job_id} created for {thing} (execution 1 QUEUED)")
        return {"jobId": job_id, "thingName": thing, "executionNumber": execution["executionNumber"],
                "status": execution["status"]}

    def _queue(self, job_id: str, thing: str, number: int) -> dict:
        now = int(time.time())
        e = {"jobId": job_id, "thingName": thing, "executionNumber": number, "status": "QUEUED",
             "statusDetails": {}, "queuedAt": now, "lastUpdatedAt": now, "startedAt": None, "versionNumber": 1}
        self.executions.setdefault(f"{thing}/{job_id}", []).append(e)
        return e

    def describe(self, job_id: str) -> dict:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                raise JobsError(f"no job {job_id}")
            attempts = self._attempts(job["thing"], job_id)
            return {"job": dict(job), "executions": [self._execution(e, include_document=False) for e in attempts]}

    def list_jobs(self) -> list:
        with self.lock:
            out = []
            for job_id, job in sorted(self.jobs.items(), key=lambda kv: kv[1]["createdAt"]):
                latest = self._latest(job["thing"], job_id)
                out.append({"jobId": job_id, "thingName": job["thing"], "jobStatus": job["status"],
                            "executionNumber": latest["executionNumber"] if latest else None,
                            "executionStatus": latest["status"] if latest else None,
                            "statusDetails": dict(latest.get("statusDetails") or {}) if latest else {}})
            return out

    def cancel(self, job_id: str, force: bool = False) -> dict:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                raise JobsError(f"no job {job_id}")
            e = self._latest(job["thing"], job_id)
            assert e is not None  # a job is created with its execution
            if e["status"] == "IN_PROGRESS" and not force:
                raise JobsError(f"job {job_id} is IN_PROGRESS on {job['thing']}; use --force to cancel it")
            head = self._head(job["thing"])
            changed = e["status"] in ("QUEUED", "IN_PROGRESS")
            if changed:
                self._set(e, "CANCELED")
            job["status"] = "CANCELED"
            if changed:
                self._notify(job["thing"], head, True)
            self._save()
            self.changed.notify_all()
        self._note(f"job {job_id} canceled")
        return {"jobId": job_id, "executionStatus": e["status"]}

    def wait_for(self, job_id: str, statuses: Any, timeout: float = 30.0, execution_number: Optional[int] = None) -> dict:
        """Block until the job's latest (or given) execution has one of `statuses`; TimeoutError says what it was."""
        wanted = {statuses} if isinstance(statuses, str) else set(statuses)
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                job = self.jobs.get(job_id)
                attempts = self._attempts(job["thing"], job_id) if job else []
                match = [e for e in attempts if execution_number in (None, e["executionNumber"])]
                if match and match[-1]["status"] in wanted:
                    return self._execution(match[-1], include_document=False)
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = self._execution(match[-1], include_document=False) if match else None
                    raise TimeoutError(f"job {job_id} did not reach {sorted(wanted)} within {timeout:g}s: {seen}")
                self.changed.wait(min(left, 0.5))

    def control_commands(self) -> dict:
        def create(args: dict) -> dict:
            return self.create_job(args.get("document"), args.get("jobId"), thing=args.get("thing"),
                                   timeout_minutes=args.get("timeoutMinutes"),
                                   max_retries=int(args.get("maxRetries") or 0))

        return {
            "jobs-create": create,
            "jobs-list": lambda args: self.list_jobs(),
            "jobs-describe": lambda args: self.describe(str(args.get("jobId"))),
            "jobs-cancel": lambda args: self.cancel(str(args.get("jobId")), bool(args.get("force"))),
        }

    # -- state changes ----------------------------------------------------------------------------------------
    def _set(self, e: dict, status: str, details: Optional[dict] = None) -> None:
        now = int(time.time())
        if status == "IN_PROGRESS" and e.get("startedAt") is None:
            e["startedAt"] = now
            minutes = self.jobs[e["jobId"]].get("timeoutMinutes")
            if minutes:
                e["inProgressDeadline"] = time.time() + minutes * 60
        e["status"] = status
        if details is not None:
            e["statusDetails"] = details
        e["lastUpdatedAt"] = now
        e["versionNumber"] += 1
        if status in TERMINAL:
            e.pop("stepDeadline", None)
            self._after_terminal(e)

    def _after_terminal(self, e: dict) -> None:
        job = self.jobs[e["jobId"]]
        if e["status"] in ("FAILED", "TIMED_OUT") and e["executionNumber"] <= job.get("maxRetries", 0) \
                and job["status"] != "CANCELED":
            self._queue(e["jobId"], e["thingName"], e["executionNumber"] + 1)
            self._note(f"job {e['jobId']}: attempt {e['executionNumber']} {e['status']}; retry queued")
            return
        if job["status"] == "IN_PROGRESS":
            job["status"] = "COMPLETED"
        self._note(f"job {e['jobId']} execution {e['executionNumber']} {e['status']}: "
                   f"{(e.get('statusDetails') or {}).get('reason') or (e.get('statusDetails') or {}).get('summary', '')}",
                   level="info" if e["status"] == "SUCCEEDED" else "warning")

    def _timeouts(self, tick: float) -> None:
        while not self._stop.wait(tick):
            now = time.time()
            with self.lock:
                touched = set()
                for attempts in self.executions.values():
                    e = attempts[-1] if attempts else None
                    if not e or e["status"] != "IN_PROGRESS":
                        continue
                    deadlines = [d for d in (e.get("inProgressDeadline"), e.get("stepDeadline")) if d]
                    if deadlines and now >= min(deadlines):
                        head = self._head(e["thingName"])
                        self._set(e, "TIMED_OUT")
                        self._notify(e["thingName"], head, True)
                        touched.add(e["jobId"])
                if touched:
                    self._save()
                    self.changed.notify_all()

    # -- the MQTT API ---------------------------------------------------------------------------------------------
    def _on_request(self, topic: str, payload: bytes, source: str) -> None:
        if source == "cloud":
            return  # our own publications
        parts = topic.split("/")
        if len(parts) < 4 or parts[0] != "$aws" or parts[1] != "things" or parts[3] != "jobs":
            return
        thing, rest = parts[2], parts[4:]
        reply_to = topic
        request: Any = None
        try:
            if len(payload) > MAX_REQUEST_BYTES:
                raise _Reject("InvalidRequest", "request too large")
            try:
                request = json.loads(payload.decode("utf-8")) if payload else {}
            except (ValueError, UnicodeDecodeError):
                raise _Reject("InvalidJson", "payload is not valid UTF-8 JSON") from None
            if not isinstance(request, dict):
                raise _Reject("InvalidRequest", "payload must be a JSON object")
            token = request.get("clientToken")
            with self.lock:
                if rest == ["get"]:
                    body = self._get_pending(thing)
                elif rest == ["start-next"]:
                    body = self._start_next(thing, request)
                elif len(rest) == 2 and rest[1] == "get":
                    body = self._describe(thing, rest[0], request)
                elif len(rest) == 2 and rest[1] == "update":
                    body = self._update(thing, rest[0], request)
                else:
                    raise _Reject("InvalidTopic", f"{topic} is not a Jobs API topic")
                self._save()
                self.changed.notify_all()
        except _Reject as rej:
            body = {"code": rej.code, "message": rej.message, "timestamp": int(time.time())}
            if rej.state is not None:
                body["executionState"] = rej.state
            token = request.get("clientToken") if isinstance(request, dict) else None
            if token is not None:
                body["clientToken"] = token
            self._publish(reply_to + "/rejected", body)
            return
        body["timestamp"] = int(time.time())
        if token is not None:
            body["clientToken"] = token
        self._publish(reply_to + "/accepted", body)

    def _get_pending(self, thing: str) -> dict:
        pending = self._pending(thing)
        return {"inProgressJobs": [self._summary(e) for e in pending if e["status"] == "IN_PROGRESS"],
                "queuedJobs": [self._summary(e) for e in pending if e["status"] == "QUEUED"]}

    def _start_next(self, thing: str, request: dict) -> dict:
        pending = self._pending(thing)
        if not pending:
            return {}
        e = pending[0]
        if e["status"] == "QUEUED":  # an IN_PROGRESS head comes back unchanged
            head = self._head(thing)
            details = self._details(request.get("statusDetails")) if "statusDetails" in request else None
            step_deadline = self._step_deadline(request)
            self._set(e, "IN_PROGRESS", details)
            if step_deadline:
                e["stepDeadline"] = step_deadline
            self._notify(thing, head, False)
        return {"execution": self._execution(e)}

    def _describe(self, thing: str, job_id: str, request: dict) -> dict:
        include = request.get("includeJobDocument", True)
        if job_id == "$next":
            pending = self._pending(thing)
            return {"execution": self._execution(pending[0], bool(include))} if pending else {}
        e = self._requested_execution(thing, job_id, request)
        if e["status"] in TERMINAL:
            raise _Reject("TerminalStateReached", f"execution {e['executionNumber']} of {job_id} is {e['status']}")
        return {"execution": self._execution(e, bool(include))}

    def _requested_execution(self, thing: str, job_id: str, request: dict) -> dict:
        """The execution a get/update request names (its executionNumber, else the latest attempt)."""
        if not JOB_ID.match(job_id) or job_id not in self.jobs:
            raise _Reject("ResourceNotFound", f"no job execution {job_id} for {thing}")
        number = request.get("executionNumber")
        match = [e for e in self._attempts(thing, job_id) if number in (None, e["executionNumber"])]
        if not match:
            raise _Reject("ResourceNotFound", f"no execution {number} of job {job_id} for {thing}")
        return match[-1]

    @staticmethod
    def _details(details: Any) -> dict:
        if not isinstance(details, dict):
            raise _Reject("InvalidRequest", "statusDetails must be an object of strings")
        for k, v in details.items():
            if not DETAIL_KEY.match(k):
                raise _Reject("InvalidRequest", f"statusDetails key {k[:40]!r} must match [a-zA-Z0-9:_-]{{1,128}}")
            if not isinstance(v, str) or not 1 <= len(v) <= 1024 or any(_is_control_char(c) for c in v):
                raise _Reject("InvalidRequest", f"statusDetails[{k}] must be a 1-1024 character string "
                                                "without control characters")
        return dict(details)

    @staticmethod
    def _step_deadline(request: dict) -> Optional[float]:
        minutes = request.get("stepTimeoutInMinutes")
        if minutes is None:
            return None
        if not isinstance(minutes, (int, float)) or isinstance(minutes, bool) or not 1 <= minutes <= 10080:
            raise _Reject("InvalidRequest", "stepTimeoutInMinutes must be 1-10080")
        return time.time() + minutes * 60

    def _update(self, thing: str, job_id: str, request: dict) -> dict:
        status = request.get("status")
        if status not in DEVICE_STATUSES:
            raise _Reject("InvalidRequest", f"status must be one of {', '.join(DEVICE_STATUSES)}, got {status!r}")
        details = self._details(request["statusDetails"]) if "statusDetails" in request else None
        step_deadline = self._step_deadline(request)
        e = self._requested_execution(thing, job_id, request)
        if e["status"] in TERMINAL or (e["status"] == "QUEUED" and status in ("SUCCEEDED", "FAILED")):
            raise _Reject("InvalidStateTransition", f"cannot go from {e['status']} to {status}", self._state(e))
        expected = request.get("expectedVersion")
        if expected is not None and expected != e["versionNumber"]:
            raise _Reject("VersionMismatch", f"expectedVersion {expected} but the execution is at version "
                                             f"{e['versionNumber']}", self._state(e))
        head = self._head(thing)
        self._set(e, status, details)
        if step_deadline and status == "IN_PROGRESS":
            e["stepDeadline"] = step_deadline
        if status in TERMINAL:
            self._notify(thing, head, True)
        body: dict = {}
        if request.get("includeJobExecutionState"):
            body["executionState"] = self._state(e)
        if request.get("includeJobDocument"):
            body["jobDocument"] = self.jobs[job_id]["document"]
        return body


DECLARATION = Declaration("jobs", JobsService,
                          "IoT Jobs: queues job executions and answers the jobs topics like the Jobs data plane")
