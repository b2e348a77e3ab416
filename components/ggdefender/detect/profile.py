"""CreateSecurityProfile JSON -> validated, compiled behaviors.

Validation follows `ValidateSecurityProfileBehaviors` and the API model: metric names,
operator valid for the metric's value type, allowed statistics, duration values, datapoint counts. Every
error names the behavior (index and name) and the field. Where AWS leaves a rule open, the reference's
POLICY is followed (durationSeconds required/optional/forbidden per metric).

Numbers may arrive as integral floats or numeric strings when a profile is inlined in Greengrass
configuration; integer fields accept those (via `ggdefender.settings`), everything else is strict.
"""

from __future__ import annotations

import json
import math
import operator as op
import os
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Callable, Container, Iterable, Optional, Tuple

from ggdefender.settings import ConfigError, as_int

from . import metrics as M
from .threatintel import CidrSet, parse_cidr

NAME_RE = re.compile(r"^[a-zA-Z0-9:_-]{1,128}\Z")  # \Z: `$` would let a trailing newline through
CIDR_RE = re.compile(r"^[a-fA-F0-9:./]{2,43}$")
DESCRIPTION_RE = re.compile(r"[\x20-\x7e]*\Z")  # the API's [\p{Graph}\x20]*: Java's \p{Graph} is ASCII
TAG_KEY_PUNCTUATION = "_.:/=+-@"
MAX_BEHAVIORS = 100
MAX_PROFILE_BYTES = 1024 * 1024
PROFILE_KEYS = {"securityProfileName", "securityProfileDescription", "behaviors", "alertTargets",
                "additionalMetricsToRetain", "additionalMetricsToRetainV2", "tags", "metricsExportConfig"}
BEHAVIOR_KEYS = {"name", "metric", "metricDimension", "criteria", "suppressAlerts", "exportMetric"}
CRITERIA_KEYS = {"comparisonOperator", "value", "durationSeconds", "consecutiveDatapointsToAlarm",
                 "consecutiveDatapointsToClear", "statisticalThreshold", "mlDetectionConfig"}
VALUE_KEYS = {"count", "cidrs", "ports", "number", "numbers", "strings"}
CONFIDENCE_LEVELS = ("LOW", "MEDIUM", "HIGH")

STATIC, STATISTICAL, ML = "STATIC", "STATISTICAL", "MACHINE_LEARNING"

_COMPARE = {"less-than": op.lt, "less-than-equals": op.le, "greater-than": op.gt, "greater-than-equals": op.ge}


class ProfileError(ValueError):
    """A profile is invalid; `errors` lists every problem, each naming the behavior and the field."""

    def __init__(self, errors: list, source: str = ""):
        self.errors = list(errors)
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__(prefix + "; ".join(self.errors))


@dataclass(eq=False)
class Behavior:
    """One compiled behavior. `check(value) -> (violating, offending)` for static criteria."""

    profile: str
    name: str
    metric: str
    spec: M.MetricSpec
    criteria_type: str
    operator: Optional[str]
    threshold: Any                 # float for numeric, frozenset / CidrSet for lists, None otherwise
    duration: Optional[int]
    to_alarm: int
    to_clear: int
    suppress: bool
    statistic: Optional[str]
    quantile: Optional[float]
    confidence: Optional[str]
    dimension: Optional[dict]
    source: dict                   # the behavior JSON as given (events carry it, like AWS's)
    fingerprint: str
    check: Optional[Callable] = field(repr=False, default=None)
    compare: Optional[Callable] = field(repr=False, default=None)  # numeric comparator (compliant when true)

    @property
    def key(self) -> str:
        return f"{self.profile}/{self.name}"


@dataclass
class Profile:
    name: str
    description: str
    behaviors: tuple
    source: dict

    @property
    def document(self) -> dict:
        return self.source


# -- checks ---------------------------------------------------------------------------------------------


def _numeric_check(compare, threshold):
    def check(value):
        return (not compare(value, threshold)), None
    return check


def _set_check(members: Container[Any], inside: bool) -> Callable[[Iterable[Any]], Tuple[bool, tuple]]:
    # in-*-set: violated by any value outside; not-in-*-set: violated by any value inside
    if inside:
        def check(values):
            bad = tuple(v for v in values if v not in members)
            return bool(bad), bad
    else:
        def check(values):
            bad = tuple(v for v in values if v in members)
            return bool(bad), bad
    return check


def make_check(operator: str, threshold: Any) -> Callable:
    if operator in _COMPARE:
        return _numeric_check(_COMPARE[operator], threshold)
    return _set_check(threshold, not operator.startswith("not-"))


# -- validation -----------------------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class _Errors(list):
    def add(self, where: str, msg: str) -> None:
        self.append(f"{where}: {msg}")


def _int_field(errors: _Errors, where: str, value: Any, lo: Optional[int], hi: Optional[int]) -> Optional[int]:
    try:
        return as_int(value, where, lo, hi)
    except ConfigError as exc:
        errors.append(str(exc))
        return None


def _metric_spec(metric: str, custom_types: dict, criteria: Any) -> Optional[M.MetricSpec]:
    if metric in M.CATALOGUE:
        return M.CATALOGUE[metric]
    if metric.startswith("aws:"):
        return None
    declared = custom_types.get(metric)
    if declared:
        return M.custom_spec(metric, declared)
    # undeclared custom metric: its type follows from the value field (POLICY; AWS knows it from
    # CreateCustomMetric), statistical and ML criteria imply `number`
    value = criteria.get("value") if isinstance(criteria, dict) else None
    if isinstance(value, dict) and len(value) == 1:
        kind = next(iter(value))
        if kind == "count":
            kind = "number"
        if kind in M.KIND_TO_CUSTOM_TYPE:
            return M.custom_spec(metric, M.KIND_TO_CUSTOM_TYPE[kind])
    return M.custom_spec(metric, "number")


def _threshold(errors: _Errors, where: str, spec: M.MetricSpec, value: Any) -> Any:
    """Validate a MetricValue against the metric's kind; returns the compiled threshold."""
    if not isinstance(value, dict):
        errors.add(where, "expected an object with one of count, cidrs, ports, number, numbers, strings")
        return None
    unknown = set(value) - VALUE_KEYS
    if unknown:
        errors.add(where, f"unknown field(s) {', '.join(sorted(unknown))}")
        return None
    present = [k for k in value if value[k] is not None]
    expected = spec.kind
    allowed: Tuple[str, ...]
    if spec.side == "custom" and spec.kind == M.NUMBER:
        allowed = ("number", "count")
    else:
        allowed = (expected,)
    if len(present) != 1 or present[0] not in allowed:
        errors.add(where, f"metric {spec.name} compares against value.{expected}, got "
                          f"{', '.join('value.' + p for p in present) or 'no value'}")
        return None
    kind = present[0]
    raw = value[kind]
    w = f"{where}.{kind}"
    if kind == M.COUNT:
        if not _is_int(raw) and not (isinstance(raw, float) and raw.is_integer()):
            errors.add(w, f"expected a non-negative integer, got {raw!r}")
            return None
        if raw < 0:
            errors.add(w, f"must be >= 0, got {raw!r}")
            return None
        return int(raw)
    if kind == M.NUMBER:
        if not _is_number(raw):
            errors.add(w, f"expected a number, got {raw!r}")
            return None
        return float(raw)
    if not isinstance(raw, list):
        errors.add(w, f"expected a list, got {type(raw).__name__}")
        return None
    if kind == M.PORTS:
        bad = [p for p in raw if not (_is_int(p) or (isinstance(p, float) and p.is_integer())) or not 0 <= p <= 65535]
        if bad:
            errors.add(w, f"ports must be integers 0-65535, got {bad[:5]!r}")
            return None
        return frozenset(int(p) for p in raw)
    if kind == M.CIDRS:
        nets = []
        for i, c in enumerate(raw):
            if not isinstance(c, str) or not CIDR_RE.match(c):
                errors.add(f"{w}[{i}]", f"expected a CIDR of 2-43 characters [a-fA-F0-9:./], got {c!r}")
                return None
            try:
                nets.append(parse_cidr(c))
            except ValueError:
                errors.add(f"{w}[{i}]", f"not a valid IP address or CIDR: {c!r}")
                return None
        return CidrSet(nets)
    if kind == M.NUMBERS:
        bad = [n for n in raw if not _is_number(n)]
        if bad:
            errors.add(w, f"expected numbers, got {bad[:5]!r}")
            return None
        return frozenset(float(n) for n in raw)
    bad = [s for s in raw if not isinstance(s, str)]
    if bad:
        errors.add(w, f"expected strings, got {bad[:5]!r}")
        return None
    return frozenset(raw)


def _compile_behavior(errors: _Errors, index: int, b: Any, profile: str, custom_types: dict) -> Optional[Behavior]:
    label = f"behaviors[{index}]"
    if not isinstance(b, dict):
        errors.add(label, "expected an object")
        return None
    name = b.get("name")
    if isinstance(name, str):
        label = f"behaviors[{index}] ({name})"
    n_before = len(errors)
    unknown = set(b) - BEHAVIOR_KEYS
    if unknown:
        errors.add(label, f"unknown field(s) {', '.join(sorted(unknown))}")
    if not isinstance(name, str) or not NAME_RE.match(name):
        errors.add(f"{label}.name", f"required, 1-128 characters of [a-zA-Z0-9:_-], got {name!r}")
    metric = b.get("metric")
    criteria = b.get("criteria")
    if not isinstance(metric, str) or not metric:
        errors.add(f"{label}.metric", "required")
        return None
    spec = _metric_spec(metric, custom_types, criteria)
    if spec is None:
        errors.add(f"{label}.metric", f"unknown metric {metric!r} (known: {', '.join(M.known_metric_names())}, "
                                      "or a custom metric name)")
        return None
    if spec.side == "custom" and not NAME_RE.match(metric):
        errors.add(f"{label}.metric", f"custom metric names are 1-128 characters of [a-zA-Z0-9:_-], got {metric!r}")
    for flag in ("suppressAlerts", "exportMetric"):
        if flag in b and not isinstance(b[flag], bool):
            errors.add(f"{label}.{flag}", f"expected true or false, got {b[flag]!r}")
    dimension = b.get("metricDimension")
    if dimension is not None:
        dw = f"{label}.metricDimension"
        if spec.side == "custom":
            errors.add(dw, "dimensions cannot be used with custom metrics")
        elif not spec.dimension:
            errors.add(dw, f"metric {metric} does not support dimensions (only topic-filter metrics do)")
        if not isinstance(dimension, dict) or not isinstance(dimension.get("dimensionName"), str) \
                or not NAME_RE.match(dimension.get("dimensionName", "")):
            errors.add(f"{dw}.dimensionName", "required, 1-128 characters of [a-zA-Z0-9:_-]")
        elif dimension.get("operator", "IN") not in ("IN", "NOT_IN"):
            errors.add(f"{dw}.operator", f"expected IN or NOT_IN, got {dimension.get('operator')!r}")
    cw = f"{label}.criteria"
    if not isinstance(criteria, dict):
        errors.add(cw, "required: an object with comparisonOperator and value, statisticalThreshold, "
                       "or mlDetectionConfig")
        return None
    unknown = set(criteria) - CRITERIA_KEYS
    if unknown:
        errors.add(cw, f"unknown field(s) {', '.join(sorted(unknown))}")

    operator = criteria.get("comparisonOperator")
    has_value = criteria.get("value") is not None
    stat = criteria.get("statisticalThreshold")
    mlc = criteria.get("mlDetectionConfig")
    threshold = statistic = quantile = confidence = None
    if mlc is not None:
        ctype = ML
        for k in ("comparisonOperator", "value", "statisticalThreshold", "durationSeconds"):
            if criteria.get(k) is not None:
                errors.add(f"{cw}.{k}", "not allowed with mlDetectionConfig")
        if not spec.ml:
            errors.add(f"{cw}.mlDetectionConfig", f"ML Detect does not support metric {metric}")
        confidence = mlc.get("confidenceLevel") if isinstance(mlc, dict) else None
        if confidence not in CONFIDENCE_LEVELS:
            errors.add(f"{cw}.mlDetectionConfig.confidenceLevel", f"required, one of LOW, MEDIUM, HIGH, got {confidence!r}")
    else:
        if operator is None:
            errors.add(f"{cw}.comparisonOperator", "required (or give mlDetectionConfig)")
        elif operator not in M.ALL_OPERATORS:
            errors.add(f"{cw}.comparisonOperator", f"unknown operator {operator!r}")
        elif operator not in spec.operators:
            errors.add(f"{cw}.comparisonOperator", f"{operator} is not valid for {metric} (value type "
                                                    f"{spec.kind}); use one of {', '.join(spec.operators)}")
        if stat is not None:
            ctype = STATISTICAL
            if has_value:
                errors.add(f"{cw}.value", "not allowed with statisticalThreshold")
            if not spec.statistical:
                errors.add(f"{cw}.statisticalThreshold", f"statistical thresholds are not supported for {metric}")
            statistic = stat.get("statistic") if isinstance(stat, dict) else None
            if statistic not in M.STATISTICS:
                errors.add(f"{cw}.statisticalThreshold.statistic",
                           f"expected one of {', '.join(M.STATISTICS)}, got {statistic!r}")
            elif statistic != "Average":
                quantile = float(statistic[1:])
        else:
            ctype = STATIC
            if not has_value:
                errors.add(f"{cw}.value", "required for a static threshold (or give statisticalThreshold)")
            elif operator in spec.operators:
                threshold = _threshold(errors, f"{cw}.value", spec, criteria["value"])

    duration = None
    if criteria.get("durationSeconds") is not None:
        if spec.duration == M.FORBIDDEN:
            errors.add(f"{cw}.durationSeconds", f"not allowed for list metric {metric}")
        else:
            duration = _int_field(errors, f"{cw}.durationSeconds", criteria["durationSeconds"], None, None)
            if duration is not None and duration not in M.DURATIONS:
                errors.add(f"{cw}.durationSeconds", f"expected one of {', '.join(map(str, M.DURATIONS))}, got {duration}")
    elif spec.duration == M.REQUIRED and ctype != ML:
        errors.add(f"{cw}.durationSeconds", f"required for {metric} (one of {', '.join(map(str, M.DURATIONS))})")
    to_alarm: Optional[int] = 1
    to_clear: Optional[int] = 1
    if criteria.get("consecutiveDatapointsToAlarm") is not None:
        to_alarm = _int_field(errors, f"{cw}.consecutiveDatapointsToAlarm", criteria["consecutiveDatapointsToAlarm"], 1, 10)
    if criteria.get("consecutiveDatapointsToClear") is not None:
        to_clear = _int_field(errors, f"{cw}.consecutiveDatapointsToClear", criteria["consecutiveDatapointsToClear"], 1, 10)

    if len(errors) > n_before:
        return None
    # each was checked above (an error otherwise): narrowed for the type checker
    assert isinstance(name, str) and to_alarm is not None and to_clear is not None
    fp = _fingerprint(metric, spec, ctype, operator, threshold, duration, to_alarm, to_clear, statistic,
                      confidence, dimension)
    beh = Behavior(profile=profile, name=name, metric=metric, spec=spec, criteria_type=ctype, operator=operator,
                   threshold=threshold, duration=duration, to_alarm=to_alarm, to_clear=to_clear,
                   suppress=bool(b.get("suppressAlerts", False)), statistic=statistic, quantile=quantile,
                   confidence=confidence, dimension=dimension, source=b, fingerprint=fp)
    if ctype == STATIC:
        assert operator is not None  # a static threshold requires one (checked above)
        beh.check = make_check(operator, threshold)
    if operator in _COMPARE:
        beh.compare = _COMPARE[operator]
    return beh


def _fingerprint(metric: str, spec: M.MetricSpec, *parts: Any) -> str:
    """Identity of a behavior's meaning: equal whether numbers came as ints, floats or strings, so a
    configuration round trip through Greengrass does not look like a change (which would invalidate alarms)."""
    def norm(v):
        if isinstance(v, CidrSet):
            return sorted(str(n) for n in v.networks)
        if isinstance(v, frozenset):
            return sorted(v, key=str)
        if isinstance(v, float) and v.is_integer():
            return int(v)
        return v
    data = [metric, spec.kind, spec.custom_type] + [norm(p) for p in parts]
    import hashlib  # here, not at start-up: it maps libcrypto (~3 MiB RSS) into the idle component

    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _tag_problem(tag: Any) -> Optional[str]:
    """What CreateSecurityProfile would refuse in one tag (Key: 1-128 letters, numbers, spaces or _.:/=+-@;
    Value: at most 256 characters), or None."""
    if not isinstance(tag, dict) or set(tag) - {"Key", "Value"}:
        return "expected {Key, Value}"
    key, value = tag.get("Key"), tag.get("Value", "")
    if not isinstance(key, str) or not 1 <= len(key) <= 128 \
            or not all(unicodedata.category(c)[0] in "LNZ" or c in TAG_KEY_PUNCTUATION for c in key):
        return f"Key: expected 1-128 letters, numbers, spaces or {TAG_KEY_PUNCTUATION}, got {str(key)[:40]!r}"
    if not isinstance(value, str) or len(value) > 256:
        return "Value: expected text of at most 256 characters"
    return None


def _validate_top(errors: _Errors, doc: dict) -> None:
    unknown = set(doc) - PROFILE_KEYS
    if unknown:
        errors.add("profile", f"unknown field(s) {', '.join(sorted(unknown))}")
    name = doc.get("securityProfileName")
    if not isinstance(name, str) or not NAME_RE.match(name):
        errors.add("securityProfileName", f"required, 1-128 characters of [a-zA-Z0-9:_-], got {name!r}")
    desc = doc.get("securityProfileDescription")
    if desc is not None and (not isinstance(desc, str) or len(desc) > 1000 or not DESCRIPTION_RE.match(desc)):
        errors.add("securityProfileDescription", "expected printable ASCII text (no tabs or line breaks) of at "
                                                 "most 1000 characters")
    targets = doc.get("alertTargets")
    if targets is not None:
        if not isinstance(targets, dict) or set(targets) - {"SNS"}:
            errors.add("alertTargets", "expected an object whose only key is SNS")
        else:
            for k, t in targets.items():
                if not isinstance(t, dict) or not isinstance(t.get("alertTargetArn"), str) \
                        or not isinstance(t.get("roleArn"), str):
                    errors.add(f"alertTargets.{k}", "alertTargetArn and roleArn are required strings")
    amr = doc.get("additionalMetricsToRetain")
    if amr is not None and (not isinstance(amr, list) or not all(isinstance(m, str) and m for m in amr)):
        errors.add("additionalMetricsToRetain", "expected a list of metric names")
    amr2 = doc.get("additionalMetricsToRetainV2")
    if amr2 is not None:
        if not isinstance(amr2, list):
            errors.add("additionalMetricsToRetainV2", "expected a list of {metric, metricDimension?, exportMetric?}")
        else:
            for i, m in enumerate(amr2):
                if not isinstance(m, dict) or not isinstance(m.get("metric"), str):
                    errors.add(f"additionalMetricsToRetainV2[{i}].metric", "required")
    tags = doc.get("tags")
    if tags is not None and not isinstance(tags, list):
        errors.add("tags", "expected a list of {Key, Value}")
    for i, tag in enumerate(tags if isinstance(tags, list) else []):
        problem = _tag_problem(tag)
        if problem:
            errors.add(f"tags[{i}]", problem)
    mec = doc.get("metricsExportConfig")
    if mec is not None and (not isinstance(mec, dict) or not isinstance(mec.get("mqttTopic"), str)
                            or not isinstance(mec.get("roleArn"), str)):
        errors.add("metricsExportConfig", "mqttTopic and roleArn are required strings")


def load_profile(doc: Any, custom_types: Optional[dict] = None, source: str = "") -> Profile:
    """Validate and compile one CreateSecurityProfile document; raises ProfileError listing every problem."""
    errors = _Errors()
    if not isinstance(doc, dict):
        raise ProfileError(["profile: expected a JSON object (CreateSecurityProfile input)"], source)
    _validate_top(errors, doc)
    given = doc.get("securityProfileName")
    name = given if isinstance(given, str) else "?"
    behaviors = doc.get("behaviors", [])
    compiled = []
    if not isinstance(behaviors, list):
        errors.add("behaviors", "expected a list")
        behaviors = []
    elif len(behaviors) > MAX_BEHAVIORS:
        errors.add("behaviors", f"at most {MAX_BEHAVIORS} behaviors, got {len(behaviors)}")
        behaviors = []
    seen = set()
    for i, b in enumerate(behaviors):
        beh = _compile_behavior(errors, i, b, name, custom_types or {})
        if beh is not None:
            if beh.name in seen:
                errors.add(f"behaviors[{i}] ({beh.name}).name", "duplicate behavior name in this profile")
            seen.add(beh.name)
            compiled.append(beh)
    if errors:
        raise ProfileError(errors, source)
    return Profile(name, doc.get("securityProfileDescription") or "", tuple(compiled), doc)


def lint(profile: Profile) -> list:
    """Warnings about valid but probably unintended behaviors (a behavior describes NORMAL behavior)."""
    out = []
    for b in profile.behaviors:
        if b.criteria_type == STATISTICAL and b.quantile is not None:
            if b.operator in ("greater-than", "greater-than-equals") and b.quantile >= 50:
                out.append(f"{b.name}: '{b.operator} {b.statistic}' says normal values lie ABOVE the "
                           f"{b.statistic} of history, so almost every datapoint violates it; to alarm on "
                           f"unusually high values write 'less-than-equals {b.statistic}'")
            elif b.operator in ("less-than", "less-than-equals") and b.quantile <= 10:
                out.append(f"{b.name}: '{b.operator} {b.statistic}' says normal values lie BELOW the "
                           f"{b.statistic} of history, so almost every datapoint violates it; to alarm on "
                           f"unusually low values write 'greater-than-equals {b.statistic}'")
    return out


def validate_behaviors(behaviors: Any, custom_types: Optional[dict] = None) -> dict:
    """`ValidateSecurityProfileBehaviors`' answer: {"valid": bool, "validationErrors": [{"errorMessage"}]}."""
    errors = _Errors()
    if not isinstance(behaviors, list) or len(behaviors) > MAX_BEHAVIORS:
        errors.add("behaviors", f"expected a list of at most {MAX_BEHAVIORS} behaviors")
    else:
        for i, b in enumerate(behaviors):
            _compile_behavior(errors, i, b, "validate", custom_types or {})
    return {"valid": not errors, "validationErrors": [{"errorMessage": e} for e in errors]}


def read_profile_file(path: str, custom_types: Optional[dict] = None) -> Profile:
    """A profile from a JSON file (the file `aws iot create-security-profile --cli-input-json` takes)."""
    try:
        if os.path.getsize(path) > MAX_PROFILE_BYTES:
            raise ProfileError([f"file larger than {MAX_PROFILE_BYTES} bytes"], path)
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except OSError as exc:
        raise ProfileError([f"cannot read: {exc.strerror or exc}"], path) from None
    except json.JSONDecodeError as exc:
        raise ProfileError([f"not valid JSON: {exc}"], path) from None
    return load_profile(doc, custom_types, source=path)
