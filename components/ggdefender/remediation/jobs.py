"""The AWS IoT Jobs device protocol as a pure state machine: messages and clock ticks in, actions out.

No I/O here: the listener feeds MQTT messages (`on_message`), execution results (`on_execution_done`),
step progress (`on_step`) and the time (`tick`), and carries out the returned actions (`Publish`,
`Execute`, `SaveJournal`). Rules it enforces (see docs/jobs.md and the IoT Jobs reference):

- only this thing's non-namespaced topics; never the `aws-gg-deployment` namespace Greengrass uses;
  job ids are checked against the API's pattern before any topic is built from them;
- read-then-claim by default: `$next/get`, then `{jobId}/update` IN_PROGRESS with `expectedVersion`
  (`ClaimMode: start-next` uses `start-next` like the Device Client); a QUEUED job is claimed at once;
- one execution at a time; notifications only ever trigger a look at the queue, and a job runs only when
  its (jobId, executionNumber) is not yet in the persisted journal, so duplicates execute once;
- an execution found IN_PROGRESS at start-up is resumed from the journal (finished or failed), and a
  terminal status whose acknowledgement was lost is re-sent (checked first with `{jobId}/get`);
- only IN_PROGRESS, SUCCEEDED, FAILED and REJECTED are ever sent; statusDetails are cut to the API's
  limits; only RequestThrottled and InternalError (and lost replies) are retried, with exponential
  backoff plus jitter (randomness injected, so tests stay deterministic); VersionMismatch is
  re-evaluated against the returned state;
- while an execution runs, every notification (and a periodic poll) checks it with `{jobId}/get`: one
  the service ended (cancel --force, timeout) yields `Cancel`, and no update is ever sent for it again;
- `pause()` stops taking new executions (Remediation.Enabled=false) but finishes and reports the current one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import unicodedata
import uuid
from typing import Any, Callable, Optional

# the protocol's names, limits and topics are shared with the offline Jobs service (local/cloud/jobs_service.py);
# subscription_filters is the listener's (it reaches it through this module)
from ggdefender.jobs_protocol import (DETAIL_KEY_BAD, JOB_ID, MAX_DETAIL_KEY, TERMINAL, jobs_prefix,  # noqa: F401
                                      subscription_filters)

log = logging.getLogger("ggdefender.remediation.jobs")

RETRYABLE_CODES = ("RequestThrottled", "InternalError")
MAX_DETAIL_ENTRIES = 16
MAX_DETAIL_VALUE = 1024
MAX_JOURNAL_ENTRIES = 200
_FIRST_KEYS = ("reason", "summary", "operation", "failedStep", "format", "dryRun")
_TAIL_KEYS = ("stdout", "stderr")  # keep the end of output, like the Device Client
_GG_DEPLOYMENT_KEYS = ("configurationArn", "deploymentPolicies", "deploymentId")


# -- actions -----------------------------------------------------------------------------------------
@dataclasses.dataclass
class Publish:
    topic: str
    payload: dict


@dataclasses.dataclass
class Execute:
    job_id: str
    execution_number: int
    document: Any  # dict (MQTT) or str (HTTPS plane); the listener validates it
    done_steps: int = 0
    interrupted: Optional[int] = None  # index of a step that had started before a restart
    marker: Optional[dict] = None  # what that step recorded before it started (a reboot's boot id)


@dataclasses.dataclass
class SaveJournal:
    pass


@dataclasses.dataclass
class Cancel:
    """The service ended the running execution (e.g. cancel --force): stop it; its result is never sent."""

    job_id: str
    execution_number: int
    status: str  # what the service says (CANCELED, TIMED_OUT, REMOVED, ... or "gone")


def sanitize_details(details: dict) -> dict:
    """statusDetails within the API limits: keys [a-zA-Z0-9:_-]{1,128}, values 1-1024 chars without control
    characters, at most MAX_DETAIL_ENTRIES entries (the most useful first)."""
    ordered = [k for k in _FIRST_KEYS if k in details] + [k for k in details if k not in _FIRST_KEYS]
    out: dict = {}
    for key in ordered:
        if len(out) >= MAX_DETAIL_ENTRIES:
            break
        clean_key = DETAIL_KEY_BAD.sub("_", str(key))[:MAX_DETAIL_KEY]
        value = "".join(ch if not unicodedata.category(ch).startswith("C") else " " for ch in str(details[key]))
        value = value.strip()
        if not clean_key or not value or clean_key in out:
            continue
        if len(value) > MAX_DETAIL_VALUE:
            value = ("..." + value[-(MAX_DETAIL_VALUE - 3):]) if key in _TAIL_KEYS \
                else (value[:MAX_DETAIL_VALUE - 3] + "...")
        out[clean_key] = value
    return out


def looks_like_greengrass_deployment(document: Any) -> bool:
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except ValueError:
            return False
    return isinstance(document, dict) and any(k in document for k in _GG_DEPLOYMENT_KEYS)


# -- journal -------------------------------------------------------------------------------------------
class Journal:
    """What this device did with each execution, keyed by jobId + executionNumber (persisted by the caller).

    Entry states: claiming -> running -> finished (terminal status known, not yet acknowledged) ->
    acknowledged; or abandoned (the service refused our updates; never touched again).
    """

    def __init__(self, entries: Optional[dict] = None):
        self.entries: dict = dict(entries or {})

    @staticmethod
    def key(job_id: str, execution_number: Any) -> str:
        return f"{job_id}#{execution_number}"

    def get(self, job_id: str, execution_number: Any) -> Optional[dict]:
        return self.entries.get(self.key(job_id, execution_number))

    def put(self, job_id: str, execution_number: Any, now: float, **fields: Any) -> dict:
        k = self.key(job_id, execution_number)
        entry = self.entries.setdefault(k, {"jobId": job_id, "executionNumber": execution_number,
                                            "createdAt": now})
        entry.update(fields)
        entry["updatedAt"] = now
        self._trim()
        return entry

    def unacknowledged(self) -> list:
        return [e for e in self.entries.values() if e.get("state") == "finished"]

    def _trim(self) -> None:
        done = [k for k, e in self.entries.items() if e.get("state") in CLOSED_STATES]
        excess = len(self.entries) - MAX_JOURNAL_ENTRIES
        if excess > 0:
            done.sort(key=lambda k: self.entries[k].get("updatedAt", 0))
            for k in done[:excess]:
                del self.entries[k]

    def to_json(self) -> dict:
        return {"version": 1, "entries": self.entries}

    @classmethod
    def from_json(cls, data: Any) -> "Journal":
        """A journal read back from disk; ValueError naming the first entry of the wrong shape (the caller
        moves the file aside and starts empty rather than crash on it later)."""
        if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
            raise ValueError('not a remediation journal: expected {"entries": {...}}')
        entries = data["entries"]
        if len(entries) > MAX_JOURNAL_ENTRIES * 2:
            raise ValueError(f"remediation journal has {len(entries)} entries; at most {MAX_JOURNAL_ENTRIES}")
        for key, entry in entries.items():
            problem = _entry_problem(key, entry)
            if problem:
                raise ValueError(f"remediation journal entry {str(key)[:80]!r}: {problem}")
        return cls({k: dict(v) for k, v in entries.items()})


ENTRY_STATES = ("claiming", "running", "finished", "acknowledged", "abandoned", "canceled")
CLOSED_STATES = ("acknowledged", "abandoned", "canceled")  # never touched again


def _entry_problem(key: Any, entry: Any) -> Optional[str]:
    """What is wrong with one persisted journal entry, or None."""
    if not isinstance(entry, dict):
        return f"expected an object, got {type(entry).__name__}"
    job_id, number = entry.get("jobId"), entry.get("executionNumber")
    if not isinstance(job_id, str) or not JOB_ID.match(job_id):
        return "jobId missing or invalid"
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        return "executionNumber missing or not a positive integer"
    if key != Journal.key(job_id, number):
        return f"key does not match {Journal.key(job_id, number)!r}"
    if entry.get("state") not in ENTRY_STATES:
        return f"state {entry.get('state')!r} is not one of {', '.join(ENTRY_STATES)}"
    if entry["state"] == "finished" and entry.get("status") not in ("SUCCEEDED", "FAILED", "REJECTED"):
        return "a finished entry needs status SUCCEEDED, FAILED or REJECTED"
    if "status" in entry and not isinstance(entry["status"], str):
        return "status is not a string"
    details = entry.get("statusDetails", {})
    if not isinstance(details, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in details.items()):
        return "statusDetails is not an object of strings"
    for field in ("doneSteps", "startedStep"):
        value = entry.get(field, 0)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            return f"{field} is not a non-negative integer"
    for field in ("createdAt", "updatedAt"):
        value = entry.get(field, 0)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"{field} is not a number"
    marker = entry.get("marker", {})
    if not isinstance(marker, dict) or not all(isinstance(v, (str, int, float)) for v in marker.values()):
        return "marker is not an object of strings and numbers"
    return None


# -- the machine ------------------------------------------------------------------------------------------
class JobsMachine:
    def __init__(
        self,
        thing: str,
        journal: Optional[Journal] = None,
        *,
        claim_mode: str = "describe",
        reply_timeout: float = 10.0,
        retry_initial: float = 2.0,
        retry_max: float = 300.0,
        idle_poll: float = 0.0,
        cancel_poll: float = 0.0,
        token_factory: Optional[Callable[[], str]] = None,
        rng: Optional[Callable[[], float]] = None,
    ):
        self.thing = thing
        self.prefix = jobs_prefix(thing)
        self.journal = journal or Journal()
        self.claim_mode = claim_mode
        self.reply_timeout = reply_timeout
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.idle_poll = idle_poll
        self.cancel_poll = cancel_poll  # seconds between checks that the running execution is still ours
        self._token = token_factory or (lambda: uuid.uuid4().hex[:16])
        self._random = rng or random.random  # [0, 1); injected by tests
        self.paused = False  # Remediation.Enabled=false: finish the current execution, take no new one
        self.last_probe = 0.0
        self.state = "stopped"  # stopped | idle | looking | checking | claiming | executing | reporting
        self.current: Optional[dict] = None  # jobId, executionNumber, versionNumber
        self.pending: Optional[dict] = None  # the one request awaiting a reply
        self.look_again = False
        self.idle_since = 0.0
        self._claim_doc: Any = None  # the document from the $next/get reply, used once the claim is accepted

    # -- public inputs ---------------------------------------------------------------------------------
    def start(self, now: float) -> list:
        """Begin (or begin again after a reconnect): re-send unacknowledged results, then look at the queue."""
        self.state = "idle"
        return self._next_work(now)

    def pause(self, now: float) -> list:
        """Take no new execution; one already claimed still runs and its result is still reported."""
        self.paused = True
        self.look_again = False
        if self.state == "looking":  # the answer to this look is ignored (its token no longer matches)
            self.pending = None
            self.state = "idle"
            self.idle_since = now
        return []

    def resume(self, now: float) -> list:
        self.paused = False
        if self.state in ("idle", "stopped"):
            return self.start(now)
        self.look_again = True
        return []

    @property
    def busy(self) -> bool:
        """An execution or a request is still in flight (a paused machine is quiet only when not busy)."""
        return self.state not in ("idle", "stopped") or self.pending is not None

    def on_message(self, topic: str, payload: bytes, now: float) -> list:
        if not topic.startswith(self.prefix):
            return []  # another thing's topic: never act on it
        rest = topic[len(self.prefix):]
        try:
            msg = json.loads(payload.decode("utf-8") if isinstance(payload, (bytes, bytearray)) else payload)
        except (ValueError, UnicodeDecodeError):
            log.warning("ignoring a non-JSON message on %s", topic)
            return []
        if not isinstance(msg, dict):
            return []
        parts = rest.split("/")
        if rest in ("notify", "notify-next") and self.state == "executing":
            return self._want_next(now)  # an empty list may be the running execution's cancellation
        if rest == "notify":
            jobs = msg.get("jobs") or {}
            if isinstance(jobs, dict) and (jobs.get("QUEUED") or jobs.get("IN_PROGRESS")):
                return self._want_next(now)
            return []
        if rest == "notify-next":
            return self._want_next(now) if msg.get("execution") else []
        if len(parts) == 2 and parts[0] == "start-next":
            return self._on_next_reply(parts[1], msg, now)
        if len(parts) == 3 and parts[1] == "get":
            if parts[0] == "$next":
                return self._on_next_reply(parts[2], msg, now)
            return self._on_get_reply(parts[0], parts[2], msg, now)
        if len(parts) == 3 and parts[1] == "update":
            return self._on_update_reply(parts[0], parts[2], msg, now)
        return []

    def on_step(self, job_id: str, execution_number: int, index: int, phase: str, now: float,
                marker: Optional[dict] = None) -> list:
        """The executor started/finished a step; recorded so a restart knows where it stood. A step that
        ends this process (reboot) gives a `marker`: kept in the journal and reported as IN_PROGRESS."""
        entry = self.journal.get(job_id, execution_number)
        if entry is None or entry.get("state") != "running":
            return []
        if phase == "started":
            entry["startedStep"] = index
            if marker is not None:
                entry["marker"] = dict(marker)
        else:
            entry["doneSteps"] = index + 1
            entry.pop("startedStep", None)
            entry.pop("marker", None)
        entry["updatedAt"] = now
        if marker is not None and phase == "started":
            return [SaveJournal()] + self._progress(index, marker, now)
        return [SaveJournal()]

    def _progress(self, index: int, marker: dict, now: float) -> list:
        """IN_PROGRESS with the step's marker in statusDetails (an open probe gives way: one request at a time)."""
        cur = self.current
        if cur is None:
            return []
        details = sanitize_details(dict({"step": str(index + 1)}, **{k: str(v) for k, v in marker.items()}))
        payload = {"status": "IN_PROGRESS", "statusDetails": details, "executionNumber": cur["executionNumber"]}
        if isinstance(cur.get("versionNumber"), int):
            payload["expectedVersion"] = cur["versionNumber"]
        return self._publish("progress", f"{self.prefix}{cur['jobId']}/update", payload, now)

    def on_execution_done(self, job_id: str, execution_number: int, status: str, details: dict,
                          now: float) -> list:
        if status not in ("SUCCEEDED", "FAILED", "REJECTED"):
            raise ValueError(f"a device may not report {status!r}")
        cur = self.current
        if cur is None or cur["jobId"] != job_id or cur["executionNumber"] != execution_number:
            log.warning("result for %s#%s arrived but it is not the current execution", job_id, execution_number)
            return []
        entry = self.journal.get(job_id, execution_number)
        if entry is not None and entry.get("state") == "canceled":
            # the service ended it while it ran: its result is never sent (no update after a terminal state)
            log.info("execution %s#%s stopped after the service ended it (%s); its %s result is not reported",
                     job_id, execution_number, entry.get("serviceStatus"), status)
            self.look_again = True
            return self._go_idle(now)
        self.journal.put(job_id, execution_number, now, state="finished", status=status,
                         statusDetails=sanitize_details(details))
        self.state = "reporting"
        if self.pending is not None and self.pending["kind"] in ("probe", "progress"):
            return [SaveJournal()]  # its answer decides: still ours -> report the result; ended -> drop it
        return [SaveJournal()] + self._send_final(now)

    def tick(self, now: float) -> list:
        p = self.pending
        if p is not None:
            due = p.get("retry_at")
            if due is not None:
                return self._resend(now) if now >= due else []
            if p["kind"] in ("probe", "progress") and now - p["sent_at"] >= self.reply_timeout:
                # no answer: keep running; a result waiting for it goes out (refused if the job is over)
                self.pending = None
                return self._send_final(now) if self.state == "reporting" else []
            if now - p["sent_at"] >= self.reply_timeout:
                log.warning("no reply to %s on %s after %.0fs; retrying", p["kind"], p["topic"], self.reply_timeout)
                return self._schedule_retry(now, immediate=True)
            return []
        if self.state == "idle" and not self.paused and self.idle_poll and now - self.idle_since >= self.idle_poll:
            return self._next_work(now)  # a safety net for a lost notification
        if self.state == "executing" and self.cancel_poll and now - self.last_probe >= self.cancel_poll:
            return self._probe(now)  # a lost cancel notification is still noticed
        return []

    # -- helpers ----------------------------------------------------------------------------------------
    def _publish(self, kind: str, topic: str, payload: dict, now: float, **extra: Any) -> list:
        token = self._token()
        payload = dict(payload, clientToken=token)
        self.pending = {"kind": kind, "topic": topic, "payload": payload, "token": token, "sent_at": now,
                        "attempts": extra.pop("attempts", 0), **extra}
        return [Publish(topic, payload)]

    # the machine's invariants, for the states that rely on them (said to the type checker, checked at run time)
    def _current(self) -> dict:
        assert self.current is not None, f"no execution in hand in state {self.state}"
        return self.current

    def _pending(self) -> dict:
        assert self.pending is not None, f"no request awaiting a reply in state {self.state}"
        return self.pending

    def _entry(self, cur: dict) -> dict:
        entry = self.journal.get(cur["jobId"], cur["executionNumber"])
        assert entry is not None, f"no journal entry for {cur['jobId']}#{cur['executionNumber']}"
        return entry

    def _matches(self, msg: dict, kinds: tuple) -> bool:
        p = self.pending
        return p is not None and p["kind"] in kinds and msg.get("clientToken") == p["token"]

    def _backoff(self, attempts: int) -> float:
        """Exponential backoff with equal jitter: half the doubled delay fixed, half random, never above
        retry_max, so a fleet throttled at the same moment does not retry in lockstep."""
        cap = min(self.retry_max, self.retry_initial * (2 ** max(0, attempts - 1)))
        return cap / 2 + self._random() * cap / 2

    def _schedule_retry(self, now: float, immediate: bool = False) -> list:
        p = self._pending()
        p["attempts"] += 1
        p["retry_at"] = now if immediate else now + self._backoff(p["attempts"])
        return self._resend(now) if immediate else []

    def _resend(self, now: float) -> list:
        p = self._pending()
        token = self._token()  # a fresh token per attempt, so a late reply to the old one is ignored
        p["payload"] = dict(p["payload"], clientToken=token)
        p.update(token=token, sent_at=now)
        p.pop("retry_at", None)
        return [Publish(p["topic"], p["payload"])]

    def _want_next(self, now: float) -> list:
        if self.state == "idle":
            return [] if self.paused else self._next_work(now)
        if not self.paused:
            self.look_again = True  # busy: look once more when the current execution is done
        # a notification while running may mean the running execution was cancelled: ask
        return self._probe(now) if self.state == "executing" else []

    def _probe(self, now: float) -> list:
        """Ask whether the running execution is still ours ({jobId}/get); one request in flight at most."""
        cur = self.current
        if self.pending is not None or cur is None:
            return []
        self.last_probe = now
        return self._publish("probe", f"{self.prefix}{cur['jobId']}/get",
                             {"executionNumber": cur["executionNumber"], "includeJobDocument": False}, now)

    def _on_probe_reply(self, outcome: str, msg: dict, now: float) -> list:
        cur = self._current()
        self.pending = None
        if outcome == "accepted":
            ex = msg.get("execution") or {}
            status = ex.get("status")
            if status in ("QUEUED", "IN_PROGRESS"):
                if isinstance(ex.get("versionNumber"), int):
                    cur["versionNumber"] = ex["versionNumber"]
                return self._send_final(now) if self.state == "reporting" else []
            return self._ended_by_service(str(status or "unknown"), now)
        if msg.get("code") in RETRYABLE_CODES:  # no answer to act on: carry on as before
            return self._send_final(now) if self.state == "reporting" else []
        # TerminalStateReached (cancelled, timed out) or ResourceNotFound (deleted)
        return self._ended_by_service(str(msg.get("code") or "unknown"), now)

    def _ended_by_service(self, status: str, now: float) -> list:
        cur = self._current()
        log.warning("execution %s#%s was ended by the service (%s): stopping it, reporting nothing more",
                    cur["jobId"], cur["executionNumber"], status)
        self.journal.put(cur["jobId"], cur["executionNumber"], now, state="canceled", serviceStatus=status)
        if self.state == "executing":
            # stay "executing" until the worker says it stopped: still one execution at a time
            return [SaveJournal(), Cancel(cur["jobId"], cur["executionNumber"], status)]
        self.look_again = True
        return [SaveJournal()] + self._go_idle(now)

    def _go_idle(self, now: float) -> list:
        self.pending = None
        self.current = None
        self.state = "idle"
        self.idle_since = now
        if self.look_again and not self.paused:
            self.look_again = False
            return self._next_work(now)
        self.look_again = False
        return []

    def _next_work(self, now: float) -> list:
        self.pending = None
        self.look_again = False
        for entry in self.journal.unacknowledged():
            if JOB_ID.match(str(entry.get("jobId", ""))):
                self.state = "checking"
                self.current = {"jobId": entry["jobId"], "executionNumber": entry["executionNumber"],
                                "versionNumber": None}
                return self._publish("check", f"{self.prefix}{entry['jobId']}/get",
                                     {"executionNumber": entry["executionNumber"], "includeJobDocument": False},
                                     now)
            entry["state"] = "abandoned"
        if self.paused:
            self.state = "idle"
            self.idle_since = now
            return []
        self.state = "looking"
        if self.claim_mode == "start-next":
            return self._publish("next", self.prefix + "start-next", {}, now)
        return self._publish("next", self.prefix + "$next/get", {"includeJobDocument": True}, now)

    def _rejected_retryable(self, msg: dict, now: float) -> Optional[list]:
        if msg.get("code") in RETRYABLE_CODES:
            log.warning("%s rejected with %s; retrying with backoff", self._pending()["kind"], msg.get("code"))
            return self._schedule_retry(now)
        return None

    # -- replies ----------------------------------------------------------------------------------------
    def _on_next_reply(self, outcome: str, msg: dict, now: float) -> list:
        if not self._matches(msg, ("next",)):
            return []
        if outcome == "rejected":
            retry = self._rejected_retryable(msg, now)
            if retry is not None:
                return retry
            log.warning("looking for the next job was rejected: %s %s", msg.get("code"), msg.get("message"))
            self.look_again = False
            return self._go_idle(now)
        if outcome != "accepted":
            return []
        execution = msg.get("execution")
        self.pending = None
        if not isinstance(execution, dict):
            return self._go_idle(now)  # nothing pending
        return self._consider(execution, now)

    def _consider(self, ex: dict, now: float) -> list:
        job_id, number = ex.get("jobId"), ex.get("executionNumber")
        status, version = ex.get("status"), ex.get("versionNumber")
        if not isinstance(job_id, str) or not JOB_ID.match(job_id) or not isinstance(number, int):
            log.error("ignoring an execution with an invalid jobId/executionNumber: %r/%r", job_id, number)
            return self._go_idle(now)
        if ex.get("thingName") not in (None, self.thing):
            log.error("ignoring execution %s for another thing %r", job_id, ex.get("thingName"))
            return self._go_idle(now)
        if looks_like_greengrass_deployment(ex.get("jobDocument")):
            log.error("execution %s looks like a Greengrass deployment; leaving it alone", job_id)
            return self._go_idle(now)
        self.current = {"jobId": job_id, "executionNumber": number, "versionNumber": version}
        entry = self.journal.get(job_id, number)
        state = entry.get("state") if entry else None
        if state in ("abandoned", "canceled"):
            log.warning("execution %s#%s was %s earlier; not touching it again", job_id, number, state)
            self.current = None
            return self._go_idle(now)
        if entry is not None and state in ("finished", "acknowledged"):
            # done before (the acknowledgement was lost): report the same result again, never re-run
            entry["state"] = "finished"
            self.state = "reporting"
            return [SaveJournal()] + self._send_final(now)
        if entry is not None and state == "running":
            self.state = "executing"
            self.last_probe = now
            return [Execute(job_id, number, ex.get("jobDocument"), done_steps=int(entry.get("doneSteps", 0)),
                            interrupted=entry.get("startedStep"), marker=entry.get("marker"))]
        if status == "QUEUED" and self.claim_mode == "describe":
            self._claim_doc = ex.get("jobDocument")
            self.journal.put(job_id, number, now, state="claiming")
            self.state = "claiming"
            payload = {"status": "IN_PROGRESS", "includeJobExecutionState": True, "executionNumber": number}
            if isinstance(version, int):
                payload["expectedVersion"] = version
            return [SaveJournal()] + self._publish("claim", f"{self.prefix}{job_id}/update", payload, now)
        if status in (None, "QUEUED", "IN_PROGRESS") or state == "claiming":
            return self._begin(ex.get("jobDocument"), now)
        log.warning("execution %s#%s is %s; nothing to do", job_id, number, status)
        return self._go_idle(now)

    def _begin(self, document: Any, now: float) -> list:
        cur = self._current()
        self.journal.put(cur["jobId"], cur["executionNumber"], now, state="running", doneSteps=0)
        self.state = "executing"
        self.last_probe = now
        self.pending = None
        return [SaveJournal(), Execute(cur["jobId"], cur["executionNumber"], document)]

    def _send_final(self, now: float, minimal: bool = False) -> list:
        cur = self._current()
        entry = self._entry(cur)
        details = entry.get("statusDetails") or {}
        if minimal:  # after InvalidRequest: only the reason, shortened
            details = sanitize_details({"reason": details.get("reason") or entry["status"].lower()})
        payload = {"status": entry["status"], "statusDetails": details, "executionNumber": cur["executionNumber"]}
        if isinstance(cur.get("versionNumber"), int):
            payload["expectedVersion"] = cur["versionNumber"]
        return self._publish("final", f"{self.prefix}{cur['jobId']}/update", payload, now,
                             minimal=minimal, mismatches=(self.pending or {}).get("mismatches", 0))

    def _on_get_reply(self, job_id: str, outcome: str, msg: dict, now: float) -> list:
        if self._matches(msg, ("probe",)) and self.current is not None and job_id == self.current["jobId"]:
            return self._on_probe_reply(outcome, msg, now)
        if not self._matches(msg, ("check",)) or self.current is None or job_id != self.current["jobId"]:
            return []
        cur = self.current
        entry = self._entry(cur)
        if outcome == "accepted":
            ex = msg.get("execution") or {}
            if ex.get("status") in ("QUEUED", "IN_PROGRESS"):
                cur["versionNumber"] = ex.get("versionNumber")
                self.state = "reporting"
                return self._send_final(now)
            entry["state"] = "acknowledged"  # the service already has a terminal status
            return [SaveJournal()] + self._next_work(now)
        retry = self._rejected_retryable(msg, now)
        if retry is not None:
            return retry
        # TerminalStateReached / ResourceNotFound: the service is done with it
        entry["state"] = "acknowledged" if msg.get("code") == "TerminalStateReached" else "abandoned"
        return [SaveJournal()] + self._next_work(now)

    def _on_update_reply(self, job_id: str, outcome: str, msg: dict, now: float) -> list:
        if not self._matches(msg, ("claim", "final", "progress")) or self.current is None \
                or job_id != self.current["jobId"]:
            return []
        cur = self.current
        pending = self._pending()  # _matches said so
        kind = pending["kind"]
        state = msg.get("executionState") or {}
        if outcome == "accepted":
            if isinstance(state.get("versionNumber"), int):
                cur["versionNumber"] = state["versionNumber"]
            elif isinstance(cur.get("versionNumber"), int):
                cur["versionNumber"] += 1
            if kind == "progress":
                self.pending = None
                return self._send_final(now) if self.state == "reporting" else []
            if kind == "claim":
                return self._begin(self._claim_doc, now)
            self.journal.put(cur["jobId"], cur["executionNumber"], now, state="acknowledged")
            self.look_again = True  # look for the next queued job straight away
            return [SaveJournal()] + self._go_idle(now)
        retry = self._rejected_retryable(msg, now)
        if retry is not None:
            return retry
        code = msg.get("code")
        server_status = state.get("status")
        if kind == "progress":
            # informational; the journal holds the marker. The service ending the execution is what matters.
            self.pending = None
            if server_status in TERMINAL or code == "TerminalStateReached":
                return self._ended_by_service(str(server_status or code), now)
            if code == "VersionMismatch" and isinstance(state.get("versionNumber"), int):
                cur["versionNumber"] = state["versionNumber"]
            log.warning("progress update of %s#%s rejected: %s %s", cur["jobId"], cur["executionNumber"], code,
                        msg.get("message"))
            return self._send_final(now) if self.state == "reporting" else []
        if code == "VersionMismatch" and server_status == "IN_PROGRESS" and pending.get("mismatches", 0) < 3:
            # re-evaluate with the returned state: it is still ours to finish, resubmit with its version
            cur["versionNumber"] = state.get("versionNumber")
            if kind == "claim":
                return self._begin(self._claim_doc, now)
            mismatches = pending.get("mismatches", 0) + 1
            pending["mismatches"] = mismatches
            return self._send_final(now, minimal=pending.get("minimal", False))
        if kind == "final" and code == "InvalidRequest" and not pending.get("minimal"):
            return self._send_final(now, minimal=True)
        log.warning("update of %s#%s rejected: %s %s (service state %s)", cur["jobId"], cur["executionNumber"],
                    code, msg.get("message"), server_status)
        final_state = "acknowledged" if kind == "final" and server_status in TERMINAL else "abandoned"
        self.journal.put(cur["jobId"], cur["executionNumber"], now, state=final_state, serviceCode=code)
        self.look_again = kind == "final"
        return [SaveJournal()] + self._go_idle(now)
