"""Violations as AWS Security Finding Format (ASFF) findings, ready for `BatchImportFindings`.

One finding per violation (its Id carries the violationId); it is created on `in-alarm`, and updated with
a strictly later `UpdatedAt` when mitigation actions are recorded, when a verification state is set, and
when the alarm clears or is invalidated (RecordState ARCHIVED). Mapping:
Severity from a `-Critical`/`-High`/`-Medium`/`-Low`/`-Informational` suffix of the behavior name, else a
configured override, else HIGH for threat lists and MEDIUM for everything else; verification
FALSE_POSITIVE/BENIGN_POSITIVE -> Workflow SUPPRESSED, anything else NOTIFIED. All 12 fields are
always sent; `asff.schema.json` checks them.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Optional

from ggdefender.settings import ConfigError, as_bool, as_choice, as_section, as_str, reject_unknown

from .threatintel import THREAT_PROFILE
from .violations import CLEARED, IN_ALARM, INVALIDATED

SEVERITIES = ("INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL")
_SUFFIX = re.compile(r"[-_](critical|high|medium|low|informational)$", re.IGNORECASE)
SUPPRESSING = ("FALSE_POSITIVE", "BENIGN_POSITIVE")


@dataclass(frozen=True)
class FindingsConfig:
    enabled: bool = True
    account: str = "000000000000"  # Security Hub needs 12 digits; set AwsAccountId to the fleet's account
    region: str = ""                # empty: AWS_REGION of the component, else us-east-1
    partition: str = "aws"
    severity_overrides: dict = field(default_factory=dict)

    @property
    def effective_region(self) -> str:
        return self.region or os.environ.get("AWS_REGION") or "us-east-1"


def parse_config(section: dict) -> FindingsConfig:
    """The `Findings` object of the Detect section."""
    section = as_section(section, "Findings")
    reject_unknown(section, ("Enabled", "AwsAccountId", "Region", "Partition", "SeverityOverrides"), "Findings")
    raw = section.get("AwsAccountId", "000000000000")
    if isinstance(raw, float) and raw.is_integer():  # Greengrass turns numbers into floats
        raw = int(raw)
    account = str(raw).zfill(12) if isinstance(raw, int) and not isinstance(raw, bool) else str(raw)
    if not re.fullmatch(r"[0-9]{12}", account):
        raise ConfigError(f"Findings.AwsAccountId: expected 12 digits, got {account!r}")
    region = as_str(section.get("Region", ""), "Findings.Region", max_length=16, allow_empty=True)
    partition = as_choice(section.get("Partition", "aws"), "Findings.Partition", ("aws", "aws-cn", "aws-us-gov"))
    overrides = {}
    for k, v in as_section(section.get("SeverityOverrides"), "Findings.SeverityOverrides").items():
        overrides[k] = as_choice(v, f"Findings.SeverityOverrides.{k}", SEVERITIES)
    return FindingsConfig(as_bool(section.get("Enabled", True), "Findings.Enabled"), account, region, partition,
                          overrides)


def severity_for(profile: str, behavior: str, cfg: FindingsConfig) -> str:
    m = _SUFFIX.search(behavior)
    if m:
        return m.group(1).upper()
    for key in (f"{profile}/{behavior}", behavior):
        if key in cfg.severity_overrides:
            return cfg.severity_overrides[key]
    return "HIGH" if profile == THREAT_PROFILE else "MEDIUM"


def iso(ts: float) -> str:
    dt = datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _parse_iso(text: str) -> float:
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def _later(previous: str, now: float) -> str:
    """`now`, or 1 ms after `previous` when the clock has not moved on: UpdatedAt must grow."""
    prev = _parse_iso(previous)
    return iso(now if now >= prev + 0.001 else prev + 0.001)


def _workflow(verification: Optional[str]) -> str:
    return "SUPPRESSED" if verification in SUPPRESSING else "NOTIFIED"


# Security Hub's text fields match `.*\S.*` in Java, whose `.` stops at line terminators: one line of text
_LINE_BREAKS_AND_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def _text(value: Any, limit: int) -> str:
    """`value` as one line of at most `limit` characters (outside text may hold line breaks and controls)."""
    s = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), sort_keys=True)
    s = _LINE_BREAKS_AND_CONTROLS.sub(" ", s)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def new_finding(event: dict, cfg: FindingsConfig, now: float, where: str = "on device") -> dict:
    """The ASFF finding of an `in-alarm` event; `where` the detector ran ("on device", or "fleet" for the fleet
    tier's handler, which builds its findings here too)."""
    p, r, acct = cfg.partition, cfg.effective_region, cfg.account
    beh = event["behavior"]
    metric = beh.get("metric", "unknown")
    thing, profile, name = event["thingName"], event["securityProfileName"], beh.get("name", "?")
    created = iso(now)
    detail = f"value {_text(event.get('metricValue'), 300)}"
    if event.get("offendingValues"):
        detail = f"offending values {_text(event['offendingValues'], 300)}"
    criteria = _text(beh.get("criteria", {}), 400)
    finding = {
        "SchemaVersion": "2018-10-08",
        "Id": f"arn:{p}:iot-device-defender:{r}:{acct}:detect/violation/{event['violationId']}",
        "ProductArn": f"arn:{p}:securityhub:{r}:{acct}:product/{acct}/default",
        "GeneratorId": f"{profile}/{name}",
        "AwsAccountId": acct,
        "CreatedAt": created,
        "UpdatedAt": created,
        "Title": _text(f"Device Defender Detect ({where}): {name} violated on {thing}", 256),
        "Description": _text(f"Thing {thing} violated behavior {name} of security profile {profile} on "
                             f"metric {metric} ({detail}); expected: {criteria}.", 1024),
        "Resources": [{"Type": "Other", "Id": f"arn:{p}:iot:{r}:{acct}:thing/{thing}", "Partition": p,
                       "Region": r}],
        "Severity": {"Label": severity_for(profile, name, cfg)},
        "Types": [f"Unusual Behaviors/Device/{metric}"],
        "Workflow": {"Status": _workflow(event.get("verificationState"))},
        "RecordState": "ACTIVE",
        "ProductFields": {
            "ggdefender/violationId": event["violationId"],
            "ggdefender/thingName": thing,
            "ggdefender/securityProfileName": profile,
            "ggdefender/behaviorName": name,
            "ggdefender/metric": metric,
            "ggdefender/violationEventType": IN_ALARM,
            "ggdefender/violationStartTime": iso(event.get("violationStartTime") or event["violationEventTime"]),
            "ggdefender/metricValue": _text(event.get("metricValue", {}), 2048),
            "ggdefender/verificationState": event.get("verificationState", "UNKNOWN"),
        },
    }
    return finding


def close_finding(finding: dict, event: dict, now: float) -> dict:
    """The finding after `alarm-cleared` / `alarm-invalidated`: archived, newer UpdatedAt."""
    f = json.loads(json.dumps(finding))
    f["UpdatedAt"] = _later(f["UpdatedAt"], now)
    f["RecordState"] = "ARCHIVED"
    pf = f.setdefault("ProductFields", {})
    pf["ggdefender/violationEventType"] = event["violationEventType"]
    pf["ggdefender/violationEndTime"] = iso(event["violationEventTime"])
    if _text(event.get("reason") or "", 2048).strip():  # a blank field is refused by the API
        pf["ggdefender/reason"] = _text(event["reason"], 2048)
    return f


def set_verification(finding: dict, state: str, description: Optional[str], now: float) -> dict:
    f = json.loads(json.dumps(finding))
    f["UpdatedAt"] = _later(f["UpdatedAt"], now)
    f["Workflow"] = {"Status": _workflow(state)}
    pf = f.setdefault("ProductFields", {})
    pf["ggdefender/verificationState"] = state
    if _text(description or "", 2048).strip():  # a blank field is refused by the API
        pf["ggdefender/verificationStateDescription"] = _text(description, 2048)
    return f


def record_actions(finding: dict, actions: list, now: float, bump: bool = True,
                   label: str = "Local mitigation") -> dict:
    """Mitigation actions on the finding: Remediation text plus one ProductFields entry per action.

    `bump=False` when the actions are part of the same change as the finding (creation or closing); `label`
    starts the Remediation text (the fleet tier's handler says what it did in the cloud)."""
    f = json.loads(json.dumps(finding))
    if bump:
        f["UpdatedAt"] = _later(f["UpdatedAt"], now)
    pf = f.setdefault("ProductFields", {})
    for k in [k for k in pf if k.startswith("ggdefender/mitigation/")]:
        del pf[k]
    lines = []
    for i, a in enumerate(actions[:10]):  # ProductFields holds at most 50 pairs
        summary = f"{a.get('operation')} {_text(a.get('arguments', {}), 200)}: {a.get('status')}"
        if a.get("detail"):
            summary += f" ({_text(a['detail'], 200)})"
        pf[f"ggdefender/mitigation/{i}"] = _text(summary, 2048)
        lines.append(summary)
    if lines:
        f["Remediation"] = {"Recommendation": {"Text": _text(f"{label}: " + "; ".join(lines), 512)}}
    return f


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    path = os.path.join(os.path.dirname(__file__), "asff.schema.json")
    with open(path, encoding="utf-8") as fh:
        schema = json.load(fh)
    return jsonschema.Draft202012Validator(schema)


def validate_finding(finding: dict) -> list:
    """Problems with a finding (empty when it is a valid ASFF finding as we define it)."""
    return [f"{'/'.join(map(str, e.absolute_path)) or 'finding'}: {e.message}"
            for e in _validator().iter_errors(finding)]


__all__ = ["FindingsConfig", "parse_config", "new_finding", "close_finding", "set_verification",
           "record_actions", "validate_finding", "severity_for", "CLEARED", "INVALIDATED"]
