"""A failing, invalid or hung plugin is logged once, then summarised, and its recovery is logged (issue 10,
item 11): a plugin broken for days must not write a warning on every report."""

import logging
import threading
import time

from ggdefender.plugins.contract import Plugin, ValueType
from ggdefender.plugins.host import WARNING_SUMMARY_SECONDS, PluginHost
from ggdefender.plugins.registry import Registry


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Flaky(Plugin):
    name = "flaky"
    value_type = ValueType.NUMBER
    default_interval = 0
    broken = True
    bad_value = False

    def sample(self):
        if Flaky.broken:
            raise OSError("sensor unplugged")
        return "NaN" if Flaky.bad_value else 1


class Stuck(Plugin):
    name = "stuck"
    value_type = ValueType.NUMBER
    default_interval = 0
    release = threading.Event()

    def sample(self):
        Stuck.release.wait(30)
        return 5


def _host(cls, clock, timeout=2):
    return PluginHost({"TimeoutSeconds": timeout}, registry=Registry(builtins={cls.name: cls}), clock=clock)


def _messages(caplog, text):
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_a_failing_plugin_logs_once_then_a_summary_with_the_count_then_recovered(caplog):
    clock = Clock()
    Flaky.broken, Flaky.bad_value = True, False
    host = _host(Flaky, clock)
    try:
        with caplog.at_level(logging.INFO, logger="ggdefender.plugins"):
            for _ in range(50):                      # 50 reports in less than the summary period
                clock.now += 1
                assert host.collect() == {}
            assert len(_messages(caplog, "plugin 'flaky' failed")) == 1
            clock.now += WARNING_SUMMARY_SECONDS
            host.collect()
            failed = _messages(caplog, "plugin 'flaky' failed")
            assert len(failed) == 2 and "still failing: 50 time(s)" in failed[1] and "51 in all" in failed[1]
            Flaky.broken = False
            clock.now += 1
            assert host.collect() == {"flaky": [{"number": 1}]}
            (recovered,) = _messages(caplog, "sampling again")
            assert "after 51 failure(s)" in recovered
            # a new failure after the recovery is logged again at once
            Flaky.broken = True
            clock.now += 1
            host.collect()
            assert len(_messages(caplog, "plugin 'flaky' failed")) == 3
    finally:
        host.close()


def test_invalid_values_are_rate_limited_too(caplog):
    clock = Clock()
    Flaky.broken, Flaky.bad_value = False, True
    host = _host(Flaky, clock)
    try:
        with caplog.at_level(logging.WARNING, logger="ggdefender.plugins"):
            for _ in range(20):
                clock.now += 1
                host.collect()
        (line,) = _messages(caplog, "metric 'flaky' (number) rejected")
        assert "expected a number" in line
    finally:
        host.close()
        Flaky.bad_value = False


def test_a_hung_plugin_logs_the_timeout_and_one_still_running_line_not_one_per_report(caplog):
    clock = Clock()
    Stuck.release.clear()
    host = _host(Stuck, clock, timeout=0.2)
    try:
        with caplog.at_level(logging.INFO, logger="ggdefender.plugins"):
            for _ in range(30):
                clock.now += 1
                host.collect()
            assert len(_messages(caplog, "no sample within")) == 1
            assert len(_messages(caplog, "previous call still running")) == 1
            Stuck.release.set()
            deadline = time.monotonic() + 10
            while host._slots[0].running is not None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(_messages(caplog, "its call returned")) == 1
    finally:
        Stuck.release.set()
        host.close()
