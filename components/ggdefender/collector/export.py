"""`Collector.Export`: where each report goes besides (or instead of) Device Defender's topic.

Pure and stdlib-only, because both processes apply it: the collector publishes to the export topic, and process
A's relay policy lets process B publish exactly that topic, derived from A's own view of the section, never from
what B asks for (supervisor/relay_server.py). Reference: docs/configuration.md, docs/fleet.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional, Tuple

from ggdefender import settings as s
from ggdefender import topics

MODES = ("off", "also", "only")  # off: Defender only; also: Defender then the rule; only: the rule only
KNOWN_KEYS = ("Mode", "RuleName")
_RULE_NAME = re.compile(topics.RULE_NAME_PATTERN)


@dataclass(frozen=True)
class ExportSettings:
    mode: str = "off"
    rule_name: str = topics.DEFAULT_EXPORT_RULE

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def topic(self, thing: str, fmt: str) -> Optional[str]:
        """The export topic of a report in `fmt`, or None when exporting is off."""
        return topics.export(self.rule_name, thing, fmt) if self.enabled else None

    def topics(self, thing: str) -> Tuple[str, ...]:
        """Every topic this setting lets the collector publish (one per report format; none when off)."""
        return tuple(topics.export(self.rule_name, thing, f) for f in topics.REPORT_FORMATS) if self.enabled else ()


def rule_name(value: Any, key: str = "RuleName") -> str:
    """A topic rule name as CreateTopicRule takes it (the IoT API's pattern and length)."""
    name = s.as_str(value, key, max_length=topics.RULE_NAME_MAX)
    if not _RULE_NAME.fullmatch(name):  # fullmatch: `$` alone would let "name\n" through
        raise s.ConfigError(f"{key}: {name!r} is not a topic rule name (letters, digits and _ only, "
                            f"1-{topics.RULE_NAME_MAX} characters, as AWS IoT CreateTopicRule takes it)")
    return name


def parse(section: Any, where: str = "Export") -> ExportSettings:
    """Validate an Export section (None = off); `where` names it in errors (the Collector section's own errors
    add "Collector." in front). Raises ConfigError naming every bad key; an unknown key is an
    error (with the closest known one), since a typo here would send reports somewhere else than meant."""
    if section is None:
        return ExportSettings()
    section = s.as_section(section, where)
    problems = s.Problems(f"{where}.")
    values: dict = {}
    if section.get("Mode") is not None:
        with problems.check():
            # YAML 1.1 reads a bare `Mode: off` as false: that is what the user meant
            mode = "off" if section["Mode"] is False else section["Mode"]
            values["mode"] = s.as_choice(mode, "Mode", MODES)
    if section.get("RuleName") is not None:
        with problems.check():
            values["rule_name"] = rule_name(section["RuleName"])
    problems.keys(section, KNOWN_KEYS, where, strict=True)
    problems.raise_if_any()
    return ExportSettings(**values)
