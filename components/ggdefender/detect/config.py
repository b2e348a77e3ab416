"""The `Detect` configuration section, validated as a whole into an immutable `DetectConfig`.

Profiles are CreateSecurityProfile documents given inline (objects), as file paths (strings), or as every
`*.json` in `ProfileDirectory`. A bad value raises `ConfigError` naming the key (for profiles: the
profile, behavior and field), and the service keeps its last good configuration.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from ggdefender.settings import (ConfigError, Problems, as_bool, as_choice, as_int, as_section, as_str,
                                 reject_unknown)

from . import findings as F
from . import metrics as M
from . import mitigation as MIT
from .profile import Profile, ProfileError, load_profile, read_profile_file
from .statistics import DAY, StatsConfig
from .threatintel import MAX_ENTRIES_DEFAULT, parse_threat_lists
from .violations import VERIFICATION_STATES

MAX_PROFILES = 50
KNOWN_KEYS = {"Enabled", "Profiles", "ProfileDirectory", "CustomMetrics", "Statistics", "ThreatLists",
              "MaxThreatListEntries", "Mitigation", "VerificationStates", "VerificationStatesText", "Findings"}
_VIOLATION_ID = re.compile(r"^[a-zA-Z0-9-]{1,128}\Z")  # \Z: `$` would let a trailing newline through


@dataclass(frozen=True)
class DetectConfig:
    enabled: bool = True
    profiles: tuple = ()
    custom_types: dict = field(default_factory=dict)
    stats: StatsConfig = StatsConfig()
    threat_lists: tuple = ()
    mitigation: MIT.MitigationConfig = MIT.MitigationConfig()
    verification: dict = field(default_factory=dict)  # violationId -> (state, description)
    findings: F.FindingsConfig = F.FindingsConfig()


def _profiles(section: dict, custom_types: dict) -> list:
    items = section.get("Profiles") or []
    if isinstance(items, (dict, str)):
        items = [items]
    if not isinstance(items, list):
        raise ConfigError("Profiles: expected a list of CreateSecurityProfile objects or file paths")
    sources = [(f"Profiles[{i}]", p) for i, p in enumerate(items)]
    folder = section.get("ProfileDirectory")
    if folder:
        folder = as_str(folder, "ProfileDirectory", max_length=4096)
        if not os.path.isdir(folder):
            raise ConfigError(f"ProfileDirectory: {folder} is not a folder")
        sources += [(path, path) for path in sorted(glob.glob(os.path.join(folder, "*.json")))]
    if len(sources) > MAX_PROFILES:
        raise ConfigError(f"Profiles: at most {MAX_PROFILES} profiles, got {len(sources)}")
    out, names = [], set()
    for where, item in sources:
        try:
            if isinstance(item, str):
                prof = read_profile_file(item, custom_types)
            else:
                prof = load_profile(item, custom_types)
        except ProfileError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if prof.name in names:
            raise ConfigError(f"{where}: duplicate securityProfileName {prof.name!r}")
        names.add(prof.name)
        out.append(prof)
    return out


def _custom_types(section: dict) -> dict:
    out = {}
    for name, t in as_section(section.get("CustomMetrics"), "CustomMetrics").items():
        if name.startswith("aws:") or not re.fullmatch(r"[a-zA-Z0-9:_-]{1,128}", name):
            raise ConfigError(f"CustomMetrics.{name}: not a valid custom metric name")
        out[name] = as_choice(t, f"CustomMetrics.{name}", tuple(M.CUSTOM_TYPES))
    return out


def _stats(section: Any) -> StatsConfig:
    s = as_section(section, "Statistics")
    reject_unknown(s, ("WarmupDatapoints", "MlWarmupDatapoints", "HistoryDays", "MaxDatapointsPerSeries"), "Statistics")
    d = StatsConfig()
    return StatsConfig(
        warmup=as_int(s.get("WarmupDatapoints", d.warmup), "Statistics.WarmupDatapoints", 1, 100_000),
        ml_warmup=as_int(s.get("MlWarmupDatapoints", d.ml_warmup), "Statistics.MlWarmupDatapoints", 1, 100_000),
        history_seconds=DAY * as_int(s.get("HistoryDays", 14), "Statistics.HistoryDays", 1, 90),
        max_points=as_int(s.get("MaxDatapointsPerSeries", d.max_points), "Statistics.MaxDatapointsPerSeries",
                          10, 200_000),
    )


def parse_verification(value: Any) -> dict:
    """`VerificationStates`: {violationId: STATE | {"State", "Description"}} or the string form
    "violationId=STATE[:description]" (several separated by ';'), which a remediation `set-config` step can
    set because its values are scalars."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        entries = {}
        for part in value.split(";"):
            part = part.strip()
            if not part:
                continue
            vid, sep, rest = part.partition("=")
            if not sep:
                raise ConfigError(f"VerificationStates: expected violationId=STATE[:description], got {part!r}")
            state, _, desc = rest.partition(":")
            entries[vid.strip()] = {"State": state.strip(), "Description": desc.strip()}
        value = entries
    value = as_section(value, "VerificationStates")
    out = {}
    for vid, v in value.items():
        where = f"VerificationStates.{vid}"
        if not _VIOLATION_ID.match(vid):
            raise ConfigError(f"{where}: not a violation id")
        if isinstance(v, str):
            v = {"State": v}
        v = as_section(v, where)
        state = as_choice(v.get("State"), f"{where}.State", VERIFICATION_STATES)
        desc = v.get("Description") or ""
        desc = as_str(desc, f"{where}.Description", max_length=1000, allow_empty=True)
        if any(ord(c) < 32 or ord(c) == 127 for c in desc):  # the API's [^\p{Cntrl}]*
            raise ConfigError(f"{where}.Description: control characters are not allowed")
        out[vid] = (state, desc)
    if len(out) > 1000:
        raise ConfigError("VerificationStates: more than 1000 entries")
    return out


def _verification(section: dict) -> dict:
    """`VerificationStates` (an object: deployments) plus `VerificationStatesText` (the string form, a separate
    leaf because a remediation `set-config` step writes scalars and Greengrass cannot turn the recipe's
    `VerificationStates: {}` container into a string). For the same violation the text form wins."""
    text = section.get("VerificationStatesText")
    if text is not None and not isinstance(text, str):
        raise ConfigError("VerificationStatesText: expected a string violationId=STATE[:description];...")
    out = parse_verification(section.get("VerificationStates"))
    out.update(parse_verification(text))
    if len(out) > 1000:
        raise ConfigError("VerificationStates + VerificationStatesText: more than 1000 entries")
    return out


def parse(section: Optional[dict]) -> DetectConfig:
    """Validate the whole `Detect` section; ConfigError lists every problem. Unknown keys are errors: a typo
    must not silently disable a rule."""
    section = as_section(section, "Detect")
    problems = Problems()
    problems.keys(section, KNOWN_KEYS, "Detect", strict=True)
    custom = problems.value(_custom_types, section, default={})
    max_entries = problems.value(as_int, section.get("MaxThreatListEntries", MAX_ENTRIES_DEFAULT),
                                 "MaxThreatListEntries", 1, 10_000_000, default=MAX_ENTRIES_DEFAULT)
    values = dict(
        enabled=problems.value(as_bool, section.get("Enabled", True), "Enabled"),
        profiles=tuple(problems.value(_profiles, section, custom, default=())),
        custom_types=custom,
        stats=problems.value(_stats, section.get("Statistics")),
        threat_lists=tuple(problems.value(parse_threat_lists, section.get("ThreatLists"), max_entries, default=())),
        mitigation=problems.value(MIT.parse_config, section.get("Mitigation")),
        verification=problems.value(_verification, section),
        findings=problems.value(F.parse_config, section.get("Findings")),
    )
    problems.raise_if_any()
    return DetectConfig(**values)


__all__ = ["DetectConfig", "parse", "parse_verification", "Profile"]
