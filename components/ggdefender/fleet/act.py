"""Act on the fleet's violations: Security Hub findings and remediation (an AWS Lambda function in production).

`handle(violations, clients, settings)` takes violations in Device Defender's shape (detect/violations.py) and
- builds one ASFF finding per violation with the device's own builder (detect/findings.py; Title says "fleet"),
  deterministically from the event's times, so a retried invocation re-imports the same finding;
- imports them with Security Hub `BatchImportFindings`, at most 100 per call (the API's limit), retrying
  throttled calls with bounded backoff and the findings a call reports as failed once;
- remediates by configuration, only for behaviors on an allow-list (never from the violation's text):
  `Remediation.Jobs` (detect's `Mitigation.Actions` format: stop-listener / block-ip with the violation's
  offending values as targets) creates one IoT Job per violation with our remediation document, its jobId
  derived from the violationId so a retry finds it (ResourceAlreadyExists means done);
  `Remediation.Quarantine` adds the thing to a static thing group that carries a continuous job.
  `setup_quarantine` creates that group and its CONTINUOUS job with our document (`ggdefender fleet
  quarantine-setup`).
- `alarm-cleared` / `alarm-invalidated`: the finding is archived (RecordState ARCHIVED, as on the device); a
  job already created is left alone; a quarantined thing stays quarantined unless `ReleaseOnClear` (a
  stateless handler cannot know whether another of the thing's violations is still in alarm).

A malformed violation is skipped and reported, never failing the batch. `lambda_handler` reads Kinesis or SQS
records (one violation, as JSON, per record) or `{"violations": [...]}`, and returns `batchItemFailures` for
records that failed for a reason a retry can fix (Lambda's ReportBatchItemFailures).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from ggdefender.detect import findings as F
from ggdefender.detect import mitigation
from ggdefender.detect.violations import CLEARED, IN_ALARM, INVALIDATED
from ggdefender.jobs_protocol import THING_NAME
from ggdefender.remediation import documents
from ggdefender.settings import ConfigError, as_bool, as_int, as_section, as_str, reject_unknown

log = logging.getLogger(__name__)

MAX_FINDINGS_PER_CALL = 100  # BatchImportFindings' limit
EVENT_TYPES = (IN_ALARM, CLEARED, INVALIDATED)
SETTINGS_ENV = "GGDEFENDER_FLEET_ACT_SETTINGS"  # the Lambda function's settings, as JSON
# error codes a later attempt can succeed after (throttling, transient service errors)
RETRYABLE = frozenset({"ThrottlingException", "TooManyRequestsException", "LimitExceededException",
                       "InternalException", "InternalFailureException", "ServiceUnavailableException",
                       "RequestLimitExceeded", "Throttling"})
JOB_ID_PREFIX = "ggdefender-"
GROUP_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_-")


class Clients(NamedTuple):
    """boto3 clients (or anything with their methods): `securityhub` and `iot`."""
    securityhub: Any
    iot: Any


@dataclass(frozen=True)
class Quarantine:
    thing_group: str
    behaviors: Tuple[str, ...]        # "Profile/Behavior" or "Behavior"
    release_on_clear: bool = False


@dataclass(frozen=True)
class ActSettings:
    findings: F.FindingsConfig = field(default_factory=F.FindingsConfig)
    jobs: mitigation.MitigationConfig = field(default_factory=mitigation.MitigationConfig)  # enabled: Jobs set
    quarantine: Optional[Quarantine] = None
    dry_run: bool = False                   # jobs report what they would do (the document's dryRun)
    max_violations: int = 1000              # per invocation
    max_findings_per_call: int = MAX_FINDINGS_PER_CALL
    max_attempts: int = 5                   # per AWS call, throttling included
    job_timeout_minutes: int = 60           # the job's inProgressTimeoutInMinutes


def parse_settings(section: Any) -> ActSettings:
    """The handler's settings (the JSON in GGDEFENDER_FLEET_ACT_SETTINGS); ConfigError names a bad key."""
    section = as_section(section, "FleetAct")
    reject_unknown(section, ("Findings", "Remediation", "MaxViolationsPerInvocation", "MaxFindingsPerCall",
                             "MaxAttempts"), "FleetAct")
    rem = as_section(section.get("Remediation"), "Remediation")
    reject_unknown(rem, ("Jobs", "Quarantine", "DryRun", "JobTimeoutMinutes"), "Remediation")
    jobs = mitigation.MitigationConfig()
    if rem.get("Jobs"):
        try:  # detect's own parser: the same allow-list format and target checks as on the device
            jobs = mitigation.parse_config({"Enabled": True, "Actions": rem["Jobs"]})
        except ConfigError as exc:
            raise ConfigError(f"Remediation.Jobs: {exc}") from None
    quarantine = None
    if rem.get("Quarantine"):
        q = as_section(rem["Quarantine"], "Remediation.Quarantine")
        reject_unknown(q, ("ThingGroup", "Behaviors", "ReleaseOnClear"), "Remediation.Quarantine")
        group = as_str(q.get("ThingGroup"), "Remediation.Quarantine.ThingGroup", max_length=128)
        if set(group) - GROUP_NAME_CHARS:
            raise ConfigError("Remediation.Quarantine.ThingGroup: expected 1-128 of [a-zA-Z0-9:_-]")
        behaviors = q.get("Behaviors")
        if not isinstance(behaviors, list) or not behaviors or \
                not all(isinstance(b, str) and 0 < len(b) <= 257 for b in behaviors):
            raise ConfigError("Remediation.Quarantine.Behaviors: expected a non-empty list of \"Profile/Behavior\" "
                              "or \"Behavior\" names")
        quarantine = Quarantine(group, tuple(behaviors),
                                as_bool(q.get("ReleaseOnClear", False), "Remediation.Quarantine.ReleaseOnClear"))
    return ActSettings(
        findings=F.parse_config(section.get("Findings") or {}),
        jobs=jobs,
        quarantine=quarantine,
        dry_run=as_bool(rem.get("DryRun", False), "Remediation.DryRun"),
        max_violations=as_int(section.get("MaxViolationsPerInvocation", 1000), "MaxViolationsPerInvocation",
                              1, 10000),
        max_findings_per_call=as_int(section.get("MaxFindingsPerCall", MAX_FINDINGS_PER_CALL), "MaxFindingsPerCall",
                                     1, MAX_FINDINGS_PER_CALL),
        max_attempts=as_int(section.get("MaxAttempts", 5), "MaxAttempts", 1, 10),
        job_timeout_minutes=as_int(rem.get("JobTimeoutMinutes", 60), "Remediation.JobTimeoutMinutes", 1, 10080),
    )


# -- input ------------------------------------------------------------------------------------------------------
class Unreadable(str):
    """A record whose content could not be read (the text says why); rejected like a malformed violation."""


def check_violation(v: Any) -> dict:
    """`v` if it is a violation this handler can act on, else ValueError naming the problem."""
    if isinstance(v, Unreadable):
        raise ValueError(str(v))
    if not isinstance(v, dict):
        raise ValueError(f"a violation must be a JSON object, got {type(v).__name__}")
    for key in ("violationId", "securityProfileName"):
        if not isinstance(v.get(key), str) or not 0 < len(v[key]) <= 128:
            raise ValueError(f"{key} must be a string of 1-128 characters")
    if not isinstance(v.get("thingName"), str) or not THING_NAME.match(v["thingName"]):
        raise ValueError("thingName must be 1-128 of [a-zA-Z0-9:_-]")
    beh = v.get("behavior")
    if not isinstance(beh, dict) or not isinstance(beh.get("name"), str) or not 0 < len(beh["name"]) <= 128:
        raise ValueError("behavior must be an object with a name of 1-128 characters")
    if "metric" in beh and not isinstance(beh["metric"], str):
        raise ValueError("behavior.metric must be a string")
    if v.get("violationEventType") not in EVENT_TYPES:
        raise ValueError(f"violationEventType must be one of {', '.join(EVENT_TYPES)}, "
                         f"got {str(v.get('violationEventType'))[:64]!r}")
    for key in ("violationEventTime", "violationStartTime"):
        t = v.get(key)
        if (key == "violationEventTime" or t is not None) and \
                (not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 < t < 1e11):
            raise ValueError(f"{key} must be epoch seconds")
    if "offendingValues" in v and not isinstance(v["offendingValues"], list):
        raise ValueError("offendingValues must be a list")
    return v


# -- remediation ------------------------------------------------------------------------------------------------
def job_id(violation_id: str) -> str:
    """The one job of a violation: the same id on every retry, so CreateJob cannot create it twice."""
    return JOB_ID_PREFIX + hashlib.sha256(violation_id.encode("utf-8")).hexdigest()[:40]


def _key(v: dict) -> Tuple[str, str]:
    return v["securityProfileName"], v["behavior"]["name"]


def thing_arn(thing: str, cfg: F.FindingsConfig) -> str:
    return f"arn:{cfg.partition}:iot:{cfg.effective_region}:{cfg.account}:thing/{thing}"


def _valid_target(target: dict) -> bool:
    try:
        for key, value in target.items():
            mitigation.check_target_value(key, value, "target")
    except ValueError:
        return False
    return True


def job_document(v: dict, settings: ActSettings) -> Optional[dict]:
    """Our remediation document for an in-alarm violation, or None when no rule or no target applies."""
    rule = mitigation.find_rule(settings.jobs, *_key(v))
    if rule is None:
        return None
    # the device's own target rule: a port/address fixed in the rule, else each offending value
    targets = mitigation.targets_of(rule, v["behavior"].get("metric", ""), v.get("offendingValues"))
    targets = [t for t in targets if _valid_target(t)]  # offending values are the device's claims
    if not targets:
        return None
    steps = [{"name": f"{i + 1}-{rule.operation}", "operation": rule.operation, "arguments": dict(t)}
             for i, t in enumerate(targets[: min(settings.jobs.max_targets, 10)])]
    doc = {"schema": documents.SCHEMA_ID, "comment": f"ggdefender fleet: violation {v['violationId']}"[:256],
           "dryRun": settings.dry_run, "steps": steps}
    return check_document(doc)  # the rule's arguments come from checked settings: a failure here is a bug


def check_document(doc: Any) -> dict:
    """`doc` if it is a valid remediation document of ours (schema and the Jobs size limit), else ValueError."""
    if not isinstance(doc, dict) or doc.get("schema") != documents.SCHEMA_ID:
        raise ValueError(f'a job document must be ours ("schema": "{documents.SCHEMA_ID}")')
    errors = sorted(documents.our_validator().iter_errors(doc), key=str)
    if errors:
        where = "/".join(map(str, errors[0].absolute_path)) or "document"
        raise ValueError(f"remediation document invalid at {where}: {errors[0].message[:200]}")
    return documents.load(doc)


def quarantine_job_id(group: str, doc: dict) -> str:
    """The group's continuous job: a new document is a new job (a job's document cannot change)."""
    text = group + "\n" + json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return "ggdefender-quarantine-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]


def setup_quarantine(clients: Clients, settings: ActSettings, doc: Any,
                     sleep: Callable[[float], None] = time.sleep) -> dict:
    """Create the quarantine thing group and its CONTINUOUS job with `doc` (our remediation document); both
    steps are idempotent (an existing group or job is reported, not an error). Errors raise."""
    if settings.quarantine is None:
        raise ConfigError("Remediation.Quarantine is not set: no group to set up")
    doc = check_document(doc)
    group, call = settings.quarantine.thing_group, Caller(settings.max_attempts, sleep)
    out: Dict[str, Any] = {"thingGroup": group}
    try:
        made = call(clients.iot.create_thing_group, thingGroupName=group, thingGroupProperties={
            "thingGroupDescription": "ggdefender quarantine: things a fleet violation put here (docs/fleet.md)"})
        out.update(thingGroupArn=made["thingGroupArn"], group="created")
    except Exception as exc:
        if _error_code(exc) != "ResourceAlreadyExistsException":  # same name, other properties: still ours
            raise
        out.update(thingGroupArn=call(clients.iot.describe_thing_group, thingGroupName=group)["thingGroupArn"],
                   group="exists")
    jid = quarantine_job_id(group, doc)
    out["jobId"] = jid
    try:
        call(clients.iot.create_job, jobId=jid, targets=[out["thingGroupArn"]], targetSelection="CONTINUOUS",
             document=json.dumps(doc, separators=(",", ":")),
             description=f"ggdefender quarantine job of thing group {group}"[:2028],
             timeoutConfig={"inProgressTimeoutInMinutes": settings.job_timeout_minutes})
        out["job"] = "created"
    except Exception as exc:
        if _error_code(exc) != "ResourceAlreadyExistsException":
            raise
        out["job"] = "exists"
    return out


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


class Caller:
    """One AWS call with bounded retries for throttling and transient errors (exponential backoff, capped,
    never past the deadline). The clients are made with botocore's own retries off, so only this counts."""

    def __init__(self, max_attempts: int, sleep: Callable[[float], None] = time.sleep,
                 deadline: Optional[float] = None, clock: Callable[[], float] = time.monotonic):
        self.max_attempts, self.sleep, self.deadline, self.clock = max_attempts, sleep, deadline, clock
        self.retries = 0

    def __call__(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        for attempt in range(1, self.max_attempts + 1):
            try:
                return fn(**kwargs)
            except Exception as exc:
                delay = min(8.0, 0.25 * 2 ** (attempt - 1))
                late = self.deadline is not None and self.clock() + delay > self.deadline
                if _error_code(exc) not in RETRYABLE or attempt == self.max_attempts or late:
                    raise
                self.retries += 1
                self.sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises


def _create_job(v: dict, settings: ActSettings, clients: Clients, call: Caller) -> Optional[dict]:
    doc = job_document(v, settings)
    if doc is None:
        return None
    jid = job_id(v["violationId"])
    action: Dict[str, Any] = {"operation": "create-job", "arguments": {"jobId": jid}}
    try:
        call(clients.iot.create_job, jobId=jid, targets=[thing_arn(v["thingName"], settings.findings)],
             document=json.dumps(doc, separators=(",", ":")), targetSelection="SNAPSHOT",
             description=f"ggdefender remediation of violation {v['violationId']}"[:2028],
             timeoutConfig={"inProgressTimeoutInMinutes": settings.job_timeout_minutes})
        action["status"] = "created"
    except Exception as exc:
        if _error_code(exc) == "ResourceAlreadyExistsException":  # a retried invocation: created before
            action["status"] = "exists"
        else:
            action.update(status="failed", detail=f"{_error_code(exc) or type(exc).__name__}: {str(exc)[:200]}",
                          retryable=_error_code(exc) in RETRYABLE)
    return action


def _quarantine(v: dict, settings: ActSettings, clients: Clients, call: Caller) -> Optional[dict]:
    q = settings.quarantine
    if q is None or not ({"/".join(_key(v)), _key(v)[1]} & set(q.behaviors)):
        return None
    in_alarm = v["violationEventType"] == IN_ALARM
    if not in_alarm and not q.release_on_clear:
        return None
    op = "add-to-thing-group" if in_alarm else "remove-from-thing-group"
    fn = clients.iot.add_thing_to_thing_group if in_alarm else clients.iot.remove_thing_from_thing_group
    action: Dict[str, Any] = {"operation": op, "arguments": {"thingGroup": q.thing_group}}
    try:  # both are idempotent in IoT: a member added twice, a non-member removed, is no error
        call(fn, thingGroupName=q.thing_group, thingName=v["thingName"])
        action["status"] = "done"
    except Exception as exc:
        action.update(status="failed", detail=f"{_error_code(exc) or type(exc).__name__}: {str(exc)[:200]}",
                      retryable=_error_code(exc) in RETRYABLE)
    return action


# -- findings ---------------------------------------------------------------------------------------------------
def finding_for(v: dict, actions: Sequence[dict], cfg: F.FindingsConfig) -> dict:
    """The ASFF finding of one violation, from its own times (a retry builds the same finding)."""
    at = float(v["violationEventTime"])
    if v["violationEventType"] == IN_ALARM:
        finding = F.new_finding(v, cfg, at, where="fleet")
    else:  # the finding as created at the violation's start, then archived by this event
        start = float(v.get("violationStartTime") or at)
        finding = F.close_finding(F.new_finding(v, cfg, start, where="fleet"), v, at)
    if actions:
        shown = [{k: a.get(k) for k in ("operation", "arguments", "status", "detail")} for a in actions]
        finding = F.record_actions(finding, shown, at, bump=False, label="Fleet remediation")
    return finding


def _import(findings: List[Tuple[int, dict]], settings: ActSettings, clients: Clients, call: Caller,
            report: dict) -> Dict[int, str]:
    """Import in batches; {index: error} for the findings not imported. A finding the service reports as
    failed is sent once more in the next call (a failure can be transient); then it is reported."""
    failed: Dict[int, str] = {}
    pending = list(findings)
    for second_try in (False, True):
        retry: List[Tuple[int, dict]] = []
        for start in range(0, len(pending), settings.max_findings_per_call):
            batch = pending[start:start + settings.max_findings_per_call]
            report["securityHubCalls"] += 1
            try:
                out = call(clients.securityhub.batch_import_findings, Findings=[f for _, f in batch])
            except Exception as exc:
                for i, _ in batch:
                    failed[i] = f"{_error_code(exc) or type(exc).__name__}: {str(exc)[:200]}"
                continue
            by_id = {f["Id"]: (i, f) for i, f in batch}
            for ff in out.get("FailedFindings") or []:
                hit = by_id.get(ff.get("Id"))
                if hit is None:
                    continue
                if second_try:
                    failed[hit[0]] = f"{ff.get('ErrorCode')}: {str(ff.get('ErrorMessage'))[:200]}"
                else:
                    retry.append(hit)
        if not retry:
            break
        pending = retry
    return failed


def handle(violations: Sequence[Any], clients: Clients, settings: ActSettings, *,
           sleep: Callable[[float], None] = time.sleep, deadline: Optional[float] = None) -> dict:
    """Act on violations. The report: per violation its finding and actions, the rejected (malformed) ones,
    `failed` (indexes a retry may fix), counts. Nothing raises for one bad violation or one failed call."""
    call = Caller(settings.max_attempts, sleep, deadline)
    report: Dict[str, Any] = {"results": [], "rejected": [], "failed": [], "securityHubCalls": 0}
    to_import: List[Tuple[int, dict]] = []
    for i, raw in enumerate(violations):
        if i >= settings.max_violations:
            report["rejected"].append({"index": i, "error": f"over MaxViolationsPerInvocation "
                                                            f"({settings.max_violations})", "retryable": True})
            continue
        try:
            v = check_violation(raw)
        except ValueError as exc:
            report["rejected"].append({"index": i, "error": str(exc), "retryable": False})
            continue
        actions: List[dict] = []
        # as on the device: a behavior with suppressAlerts gets no finding and no mitigation
        suppressed = v["violationEventType"] == IN_ALARM and bool(v.get("suppressAlerts"))
        try:
            if v["violationEventType"] == IN_ALARM and settings.jobs.rules and not suppressed:
                actions += filter(None, [_create_job(v, settings, clients, call)])
            if not suppressed:
                actions += filter(None, [_quarantine(v, settings, clients, call)])
        except ValueError as exc:  # a document our own settings cannot make valid: reported, batch goes on
            actions.append({"operation": "create-job", "status": "failed", "detail": str(exc)[:300]})
        result = {"index": i, "violationId": v["violationId"], "thingName": v["thingName"],
                  "violationEventType": v["violationEventType"], "actions": actions}
        if settings.findings.enabled and not v.get("suppressAlerts"):
            result["finding"] = "pending"
            to_import.append((i, finding_for(v, actions, settings.findings)))
        report["results"].append(result)
        if any(a.get("retryable") for a in actions):
            report["failed"].append(i)
    not_imported = _import(to_import, settings, clients, call, report) if to_import else {}
    for result in report["results"]:
        if result.get("finding") == "pending":
            err = not_imported.get(result["index"])
            result["finding"] = "imported" if err is None else f"failed: {err}"
            if err is not None and result["index"] not in report["failed"]:
                report["failed"].append(result["index"])
    report["failed"].sort()
    report["retries"] = call.retries
    for r in report["rejected"]:
        log.warning("violation %d skipped: %s", r["index"], r["error"])
    return report


# -- AWS Lambda -------------------------------------------------------------------------------------------------
def parse_event(event: Any) -> Tuple[List[Any], List[Optional[str]]]:
    """(violations, record ids) from a Kinesis or SQS event (one JSON violation per record) or
    {"violations": [...]}; a record that cannot be read becomes an `Unreadable`, which the handler rejects."""
    if isinstance(event, dict) and isinstance(event.get("violations"), list):
        return list(event["violations"]), [None] * len(event["violations"])
    if not isinstance(event, dict) or not isinstance(event.get("Records"), list):
        raise ValueError('event must be {"violations": [...]} or a Kinesis/SQS event with "Records"')
    violations: List[Any] = []
    ids: List[Optional[str]] = []
    for rec in event["Records"]:
        rec = rec if isinstance(rec, dict) else {}
        if isinstance(rec.get("kinesis"), dict):
            ids.append(rec["kinesis"].get("sequenceNumber"))
            try:
                text = base64.b64decode(rec["kinesis"].get("data", ""), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError, TypeError, ValueError):
                violations.append(Unreadable("record data is not base64 of UTF-8 text"))
                continue
        else:
            ids.append(rec.get("messageId"))
            text = rec.get("body") if isinstance(rec.get("body"), str) else ""
        try:
            violations.append(json.loads(text))
        except ValueError:
            violations.append(Unreadable(f"record is not JSON: {text[:80]!r}"))
    return violations, ids


@lru_cache(maxsize=4)
def _settings_from(text: str) -> ActSettings:
    try:
        return parse_settings(json.loads(text or "{}"))
    except ValueError as exc:  # ConfigError is a ValueError; so is bad JSON
        raise ConfigError(f"{SETTINGS_ENV}: {exc}") from None


@lru_cache(maxsize=1)
def _default_clients() -> Clients:
    import boto3  # in the Lambda runtime; not a dependency of the device component
    from botocore.config import Config

    cfg = Config(retries={"mode": "standard", "total_max_attempts": 1})  # Caller retries, bounded
    return Clients(boto3.client("securityhub", config=cfg), boto3.client("iot", config=cfg))


def lambda_handler(event: Any, context: Any) -> dict:
    """The Lambda entry point: settings from GGDEFENDER_FLEET_ACT_SETTINGS, default boto3 clients."""
    settings = _settings_from(os.environ.get(SETTINGS_ENV, ""))
    violations, ids = parse_event(event)
    deadline = None
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        deadline = time.monotonic() + context.get_remaining_time_in_millis() / 1000.0 - 5.0  # time to answer
    report = handle(violations, _default_clients(), settings, deadline=deadline)
    retry = sorted(set(report["failed"]) | {r["index"] for r in report["rejected"] if r["retryable"]})
    log.info("acted on %d violations: %d rejected, %d to retry", len(violations), len(report["rejected"]),
             len(retry))
    # only records a retry can fix go back (malformed ones would fail forever); a plain list has no ids
    failures = [{"itemIdentifier": ids[i]} for i in retry if ids[i] is not None]
    return {"batchItemFailures": failures, "report": report}
