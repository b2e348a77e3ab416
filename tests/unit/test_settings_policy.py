"""The one configuration policy (settings.Problems): every section names unknown keys with the closest known
one and lists every bad value, not only the first."""

import pytest

import logging

from ggdefender import defaults, settings
from ggdefender.collector import config as collector_config
from ggdefender.detect import config as detect_config
from ggdefender.remediation import config as remediation_config
from ggdefender.settings import ConfigError


def test_closest_prefers_the_same_word_in_another_case_then_a_near_spelling():
    known = ("SampleIntervalSeconds", "Metrics", "Enabled")
    assert settings.closest("sampleintervalseconds", known) == "SampleIntervalSeconds"
    assert settings.closest("SampleIntervalSecond", known) == "SampleIntervalSeconds"
    assert settings.closest("Zebra", known) is None


def test_a_misspelled_top_level_section_is_named_with_the_closest_section():
    warnings = settings.unknown_sections({"Pluginz": {}, "Collector": {}, "accessControl": {}, "Xyz": 1})
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("Pluginz: unknown top-level configuration section ignored (did you mean Plugins?)")
    assert warnings[1].startswith("Xyz: unknown top-level configuration section ignored;")
    assert settings.unknown_sections({"Collector": {}, "Detect": {}}) == []


def test_collector_warns_with_did_you_mean_for_a_near_miss():
    st = collector_config.parse({"SampleIntervalSecond": 600})
    assert "Collector.SampleIntervalSecond: unknown key ignored (did you mean SampleIntervalSeconds?)" in st.warnings


@pytest.mark.parametrize("parse, section, expected", [
    (detect_config.parse, {"Profile": [], "Enabled": "maybe", "MaxThreatListEntries": 0},
     ["Detect: unknown key(s) Profile (did you mean Profiles?)", "Enabled: expected true or false",
      "MaxThreatListEntries: 0 is below the minimum 1"]),
    (remediation_config.parse, {"AllowedOprations": [], "HandlerUser": "root; id", "MaxOutputBytes": "99999",
                                "FirewallTable": "x;y"},
     ["Remediation: unknown key(s) AllowedOprations (did you mean AllowedOperations?)", "invalid user name",
      "MaxOutputBytes: 99999 is above the maximum", "invalid table name"]),
    (collector_config.parse, {"Enabled": "maybe", "PublishQos": 7},
     ["Collector.Enabled: expected true or false", "Collector.PublishQos: 7 is above the maximum 1"]),
])
def test_a_rejected_section_lists_every_problem(parse, section, expected):
    with pytest.raises(ConfigError) as e:
        parse(section)
    for fragment in expected:
        assert fragment in str(e.value), str(e.value)


def test_strict_and_lenient_sections_report_unknown_keys_in_one_form():
    problems = settings.Problems()
    problems.keys({"TimeoutSecs": 1}, ("TimeoutSeconds",), "Plugins", strict=True)
    problems.keys({"Intervl": 1}, ("Interval",), "Collector", strict=False)
    assert problems.errors == ["Plugins: unknown key(s) TimeoutSecs (did you mean TimeoutSeconds?)"]
    assert problems.warnings == ["Collector.Intervl: unknown key ignored (did you mean Interval?)"]
    with pytest.raises(ConfigError, match="TimeoutSecs"):
        problems.raise_if_any()


def test_the_sections_with_defaults_are_the_declared_sections():
    assert sorted(defaults.DEFAULTS) == sorted(settings.SECTIONS)


def test_reading_the_whole_configuration_names_a_misspelled_section_once_while_it_stays(caplog, monkeypatch):
    monkeypatch.setattr(defaults, "_said_unknown", frozenset())
    with caplog.at_level(logging.WARNING, logger="ggdefender"):
        merged = defaults.with_defaults([], {"Pluginz": {"Enabled": False}, "accessControl": {}})
        defaults.with_defaults([], {"Pluginz": {"Enabled": False}})
    assert merged["Plugins"] == defaults.DEFAULTS["Plugins"]  # the typo changes nothing, so it must be said
    said = [r.getMessage() for r in caplog.records]
    assert said == ["Pluginz: unknown top-level configuration section ignored (did you mean Plugins?); "
                    "sections: Collector, Plugins, Detect, Remediation, Supervisor, Install"], said
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ggdefender"):
        defaults.with_defaults([], {"Collector": {}})  # fixed
        defaults.with_defaults(["Collector"], {})  # a section read never warns
        defaults.with_defaults([], {"Pluginz": {}})  # back again: said again
    assert len(caplog.records) == 1


@pytest.mark.parametrize("section, expected", [
    ({"Statistics": {"WarmupDatapoint": 5}},
     "Statistics: unknown key(s) WarmupDatapoint (did you mean WarmupDatapoints?)"),
    ({"Findings": {"Regoin": "eu-west-1"}}, "Findings: unknown key(s) Regoin (did you mean Region?)"),
    ({"Mitigation": {"Action": {}}}, "Mitigation: unknown key(s) Action (did you mean Actions?)"),
])
def test_detect_subsections_name_unknown_keys_like_every_section(section, expected):
    with pytest.raises(ConfigError) as e:
        detect_config.parse(section)
    assert expected in str(e.value)
