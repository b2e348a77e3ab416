import pytest

from ggdefender.collector import config as cfg
from ggdefender.settings import ConfigError


def test_defaults():
    st = cfg.parse(None)
    assert st.interval == 300 and st.report_format == "json" and st.interface_exclude == ("lo",)
    assert st.metrics == ("listening_tcp_ports", "listening_udp_ports", "tcp_connections", "network_stats")
    assert st.warnings == ()


def test_code_defaults_parse_cleanly():
    from ggdefender import defaults

    st = cfg.parse(defaults.DEFAULTS["Collector"])
    assert st == cfg.CollectorSettings() and st.warnings == ()


def test_numbers_as_strings_and_floats():
    st = cfg.parse({"SampleIntervalSeconds": "600", "MaxListSize": 50.0, "PublishQos": "0",
                    "ReportFormat": "CBOR", "Metrics": "network_stats, listening_tcp_ports"})
    assert st.sample_interval_seconds == 600 and st.max_list_size == 50 and st.publish_qos == 0
    assert st.report_format == "cbor" and st.metrics == ("listening_tcp_ports", "network_stats")


def test_interval_below_minimum_is_raised_with_a_warning():
    st = cfg.parse({"SampleIntervalSeconds": 60})
    assert st.interval == 300
    assert any("below the minimum 300" in w for w in st.warnings)


def test_development_override_is_loud():
    st = cfg.parse({"DevelopmentSampleIntervalSeconds": "1.5"})
    assert st.interval == 1.5
    assert any("For development only" in w for w in st.warnings)
    assert cfg.parse({"DevelopmentSampleIntervalSeconds": "0"}).interval == 300
    assert cfg.parse({"DevelopmentSampleIntervalSeconds": ""}).interval == 300
    with pytest.raises(ConfigError, match="below the minimum 1"):
        cfg.parse({"DevelopmentSampleIntervalSeconds": 0.5})


def test_every_bad_key_is_named():
    with pytest.raises(ConfigError) as e:
        cfg.parse({"SampleIntervalSeconds": "soon", "ReportFormat": "xml", "Metrics": ["cpu"],
                   "MaxReportBytes": 200_000, "InterfaceExclude": ["bad name"], "Enabled": "maybe"})
    text = str(e.value)
    for key in ("SampleIntervalSeconds", "ReportFormat", "Metrics: unknown metric group(s) cpu",
                "MaxReportBytes", "InterfaceExclude", "Enabled"):
        assert f"Collector.{key}" in text, text


def test_unknown_keys_warn_with_a_hint():
    st = cfg.parse({"sampleintervalseconds": 400, "Interval": 5})
    assert any("did you mean SampleIntervalSeconds" in w for w in st.warnings)
    assert any("Collector.Interval: unknown key ignored" in w for w in st.warnings)
    assert st.interval == 300


def test_section_must_be_an_object():
    with pytest.raises(ConfigError):
        cfg.parse(["SampleIntervalSeconds"])


def test_interface_filter_exclude_wins():
    f = cfg.parse({"InterfaceInclude": ["eth*", "lo"], "InterfaceExclude": ["lo"]}).interface_filter()
    assert f("eth0") and not f("lo") and not f("wlan0")


def test_empty_interface_include_is_refused():
    # it would report network_stats of 0 forever, which reads as "no traffic"
    with pytest.raises(ConfigError, match="InterfaceInclude: empty"):
        cfg.parse({"InterfaceInclude": []})
