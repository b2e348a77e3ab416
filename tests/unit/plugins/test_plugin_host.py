"""The plugin host: isolation (raise, hang, wrong type), intervals, configuration, external merge."""

import logging
import threading
import time

import pytest

from ggdefender.part import PartHost
from ggdefender.plugins.contract import Plugin, ValueType
from ggdefender.plugins.host import PluginHost, parse_section
from ggdefender.plugins.registry import Registry
from ggdefender.settings import ConfigError


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Counter(Plugin):
    name = "counter"
    value_type = ValueType.NUMBER
    unit = "count"
    options = {"Step": 1}

    def __init__(self):
        self.calls = 0
        self.step = 1

    def configure(self, options):
        if not isinstance(options["Step"], int):
            raise ConfigError("Step: expected an integer")
        self.step = options["Step"]

    def sample(self):
        self.calls += 1
        return self.calls * self.step


class Raises(Plugin):
    name = "raises"

    def sample(self):
        raise OSError("sensor unplugged")


class WrongType(Plugin):
    name = "wrong_type"
    value_type = ValueType.NUMBER

    def sample(self):
        return "12"


class NotANumber(Plugin):
    name = "not_a_number"

    def sample(self):
        return float("nan")


class Names(Plugin):
    name = "names"
    value_type = ValueType.STRING_LIST

    def sample(self):
        return ["sshd", "mosquitto"]


class BadIps(Plugin):
    name = "bad_ips"
    value_type = ValueType.IP_LIST

    def sample(self):
        return ["10.0.0.1", "999.1.1.1"]


class TooMany(Plugin):
    name = "too_many"
    value_type = ValueType.NUMBER_LIST

    def sample(self):
        return list(range(1000))


class Hangs(Plugin):
    name = "hangs"
    release = threading.Event()
    calls = 0

    def sample(self):
        type(self).calls += 1
        self.release.wait(60)
        return 1


class Exits(Plugin):
    name = "exits"

    def sample(self):
        raise SystemExit(3)


def make_host(plugins, section=None, clock=None):
    registry = Registry(builtins={cls.name: cls for cls in plugins})
    return PluginHost(section or {"TimeoutSeconds": 2}, registry=registry, clock=clock or time.monotonic)


def test_good_plugins_reported_in_device_defender_shape():
    host = make_host([Counter, Names])
    try:
        assert host.collect() == {"counter": [{"number": 1}], "names": [{"string_list": ["sshd", "mosquitto"]}]}
    finally:
        host.close()


@pytest.mark.parametrize("plugin, message", [
    (Raises, "plugin 'raises' failed: OSError: sensor unplugged"),
    (WrongType, "plugin 'wrong_type': metric 'wrong_type' (number) rejected: value: expected a number, got str"),
    (NotANumber, "plugin 'not_a_number': metric 'not_a_number' (number) rejected: value: nan is not a finite"),
    (BadIps, "plugin 'bad_ips': metric 'bad_ips' (ip_list) rejected: value[1]: '999.1.1.1' is not a valid"),
    (TooMany, "plugin 'too_many': metric 'too_many' (number_list) rejected: value: 1000 items, more than"),
    (Exits, "plugin 'exits' raised SystemExit"),
])
def test_bad_plugin_is_logged_with_its_name_and_skipped(plugin, message, caplog):
    host = make_host([Counter, plugin])
    try:
        with caplog.at_level(logging.WARNING, logger="ggdefender.plugins"):
            report = host.collect()
    finally:
        host.close()
    assert report == {"counter": [{"number": 1}]}
    assert any(message in record.getMessage() for record in caplog.records), caplog.text


def test_hung_plugin_does_not_delay_collect_beyond_timeout_nor_get_called_again(caplog):
    Hangs.release.clear()
    Hangs.calls = 0
    host = make_host([Counter, Hangs], {"TimeoutSeconds": 0.3})
    try:
        with caplog.at_level(logging.WARNING, logger="ggdefender.plugins"):
            first = host.collect()  # would block forever (until pytest-timeout) without the timeout
            second = host.collect()
        assert first == {"counter": [{"number": 1}]}
        assert second == {"counter": [{"number": 2}]}
        assert Hangs.calls == 1  # the second collect did not start another call
        text = caplog.text
        assert "plugin 'hangs': no sample within 0.3 s" in text
        assert "plugin 'hangs': previous call still running" in text

        Hangs.release.set()
        deadline = time.monotonic() + 10
        while host._slots[1].running is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        third = host.collect()
        assert Hangs.calls == 2 and third["hangs"] == [{"number": 1}]
    finally:
        Hangs.release.set()
        host.close()


def test_interval_reuses_last_good_sample_until_due():
    clock = FakeClock()
    host = make_host([Counter], {"Builtins": {"counter": {"IntervalSeconds": 60}}}, clock)
    try:
        assert host.collect()["counter"] == [{"number": 1}]
        clock.now += 30
        assert host.collect()["counter"] == [{"number": 1}]  # cached, not sampled
        clock.now += 31
        assert host.collect()["counter"] == [{"number": 2}]
    finally:
        host.close()


def test_max_sample_age_caps_a_long_interval():
    clock = FakeClock()
    host = make_host([Counter], {"MaxSampleAgeSeconds": 10, "Builtins": {"counter": {"IntervalSeconds": 600}}}, clock)
    try:
        host.collect()
        clock.now += 11
        assert host.collect()["counter"] == [{"number": 2}]
    finally:
        host.close()


def test_config_numbers_as_strings_and_plugin_options():
    settings = parse_section({"TimeoutSeconds": "2.5", "Builtins": {"counter": {"Step": 10, "Enabled": "true"}}},
                             Registry(builtins={"counter": Counter}))
    assert settings.timeout == 2.5
    assert settings.plugins[0].options == {"Step": 10}


def test_every_problem_of_the_section_is_listed_not_only_the_first():
    with pytest.raises(ConfigError) as caught:
        parse_section({"TimeoutSeconds": "soon", "Builtins": {"counter": {"Stepp": 2}, "nope": {}},
                       "External": {"MaxMetrics": 5000}}, Registry(builtins={"counter": Counter}))
    message = str(caught.value)
    for why in ("Plugins.TimeoutSeconds: expected a number", "Plugins.Builtins.nope: no built-in plugin",
                "Plugins.Builtins.counter: unknown key(s) Stepp", "Plugins.External.MaxMetrics: 5000 is above"):
        assert why in message


def test_disabled_plugin_and_master_switch():
    host = make_host([Counter, Names], {"Builtins": {"names": {"Enabled": False}}})
    try:
        assert list(host.collect()) == ["counter"]
        host.reconfigure({"Enabled": False})
        assert host.collect() == {}
    finally:
        host.close()


@pytest.mark.parametrize("section, why", [
    ({"TimeoutSecs": 5}, "Plugins: unknown key(s) TimeoutSecs"),
    ({"TimeoutSeconds": "soon"}, "Plugins.TimeoutSeconds: expected a number"),
    ({"TimeoutSeconds": 0}, "Plugins.TimeoutSeconds: 0 is below the minimum"),
    ({"Builtins": {"nope": {}}}, "Plugins.Builtins.nope: no built-in plugin of that name"),
    ({"Builtins": {"counter": {"Stepp": 2}}}, "Plugins.Builtins.counter: unknown key(s) Stepp"),
    ({"Builtins": {"counter": {"Step": "two"}}}, "Plugins.Builtins.counter: Step: expected an integer"),
    ({"Builtins": {"counter": {"IntervalSeconds": -1}}}, "IntervalSeconds: -1 is below the minimum 0"),
    ({"External": {"MaxMetrics": 5000}}, "Plugins.External.MaxMetrics: 5000 is above the maximum"),
])
def test_bad_configuration_keeps_last_good_and_logs_what(section, why, caplog):
    host = make_host([Counter], {"Builtins": {"counter": {"Step": 5}}})
    try:
        # the process's host keeps the last good section and says so (tests/unit/test_part_host.py)
        with pytest.raises(ConfigError) as exc:
            host.reconfigure(section)
        assert why in str(exc.value)
        assert host.collect() == {"counter": [{"number": 5}]}
    finally:
        host.close()


def test_unchanged_plugin_keeps_its_state_across_reconfigure():
    host = make_host([Counter, Names])
    try:
        host.collect()
        host.reconfigure({"Builtins": {"names": {"Enabled": False}}})
        assert host.collect() == {"counter": [{"number": 2}]}  # same instance: its counter went on
        host.reconfigure({"Builtins": {"counter": {"Step": 3}}})
        assert host.collect()["counter"] == [{"number": 3}]  # new options: a fresh instance
    finally:
        host.close()


def test_invalid_initial_section_starts_with_defaults(caplog, tmp_path):
    # as in process B: the host starts on the built-in defaults, then its part host dispatches the first section
    host = make_host([Counter], {})
    with caplog.at_level(logging.ERROR):
        assert PartHost(None, str(tmp_path), [host]).configure({"Plugins": {"Bogus": 1}}) == {"Plugins": False}
    try:
        assert "Plugins: unknown key(s) Bogus" in caplog.text
        assert host.collect() == {"counter": [{"number": 1}]}
    finally:
        host.close()


def test_broken_plugin_constructor_disables_only_that_plugin(caplog):
    class Broken(Plugin):
        name = "broken"

        def __init__(self):
            raise RuntimeError("no device")

        def sample(self):
            return 1

    with caplog.at_level(logging.ERROR, logger="ggdefender.plugins"):
        host = make_host([Counter, Broken])
    try:
        assert "plugin 'broken' failed to start: RuntimeError: no device" in caplog.text
        assert host.collect() == {"counter": [{"number": 1}]}
    finally:
        host.close()


def test_metric_name_clash_between_plugins_is_a_config_error(caplog):
    class Other(Counter):
        name = "other"

        def metrics(self):
            return {"counter": ValueType.NUMBER}

        def collect(self):
            return {"counter": 1}

    with caplog.at_level(logging.ERROR, logger="ggdefender.plugins"):
        host = make_host([Counter, Other], {"Builtins": {"other": {"Enabled": False}}})
        with pytest.raises(ConfigError) as exc:
            host.reconfigure({})
    try:
        assert "metric 'counter' is produced by both plugin 'counter' and plugin 'other'" in str(exc.value)
    finally:
        host.close()


def test_undeclared_metric_from_collect_is_ignored(caplog):
    class Extra(Counter):
        name = "extra"

        def collect(self):
            return {"extra": 1, "sneaky": 2}

    host = make_host([Extra])
    try:
        with caplog.at_level(logging.WARNING, logger="ggdefender.plugins"):
            assert host.collect() == {"extra": [{"number": 1}]}
        assert "plugin 'extra': returned undeclared metric 'sneaky'" in caplog.text
    finally:
        host.close()


def test_external_samples_merged_in_process_metrics_win(caplog):
    host = make_host([Counter])
    try:
        host.on_external_sample("ggdefender/custom-metrics", {"metric": "temp", "type": "number", "value": 41.5})
        with caplog.at_level(logging.WARNING, logger="ggdefender.plugins"):
            host.on_external_sample("ggdefender/custom-metrics", {"metric": "counter", "type": "number", "value": 99})
        assert "'counter' is produced by an in-process plugin" in caplog.text
        assert host.collect() == {"counter": [{"number": 1}], "temp": [{"number": 41.5}]}
    finally:
        host.close()


def test_external_disabled_ignores_samples():
    host = make_host([Counter], {"External": {"Enabled": False}})
    try:
        host.on_external_sample("ggdefender/custom-metrics", {"metric": "temp", "type": "number", "value": 1})
        assert "temp" not in host.collect()
    finally:
        host.close()


def test_fresh_default_host_reports_all_seven_builtins_on_its_first_collect():
    """What `ggdefender collect --once` relies on: real values, right types, from the very first call."""
    from ggdefender.plugins.builtin import BUILTINS

    host = PluginHost({"Builtins": {"cpu_usage": {"MinIntervalSeconds": 0.2},
                                    "cpu_usage_per_core": {"MinIntervalSeconds": 0.2}}}, registry=Registry(dict(BUILTINS)))
    try:
        report = host.collect()
    finally:
        host.close()
    expected = {name: cls.value_type.report_key for name, cls in BUILTINS.items()}
    assert {name: list(entry[0]) for name, entry in report.items()} == {n: [k] for n, k in expected.items()}
    assert all(len(entry) == 1 for entry in report.values())


def test_installed_plugin_refusing_its_own_defaults_is_disabled_alone(caplog):
    class Picky(Counter):
        name = "picky"
        options = {"Level": 3}

        def configure(self, options):
            raise ConfigError("Level: must be at most 2")  # a bug in the third-party plugin

    registry = Registry(builtins={"counter": Counter}, installed={"picky": Picky})
    with caplog.at_level(logging.ERROR, logger="ggdefender.plugins"):
        host = PluginHost({}, registry=registry)
    try:
        assert "plugin 'picky' refuses its own default options: Level: must be at most 2" in caplog.text
        # (the section itself was accepted: PluginHost({}) raised no ConfigError)
        assert host.collect() == {"counter": [{"number": 1}]}
        # a bad value the user configured is still a configuration error (the last good one stays)
        with pytest.raises(ConfigError, match="Plugins.Installed.picky: Level: must be at most 2"):
            host.reconfigure({"Installed": {"picky": {"Level": 9}}})
    finally:
        host.close()
