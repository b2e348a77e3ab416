"""Collector.Export (issue 14, device side): the setting, the collector's publishes in each mode, and process A's
relay policy and guard, which let process B publish exactly the export topic A itself has configured."""

import json
import logging
import re

import botocore.session
import pytest

from fake_ipc import FakeIpc
from ggdefender import health, relay_wire, topics
from ggdefender.collector import config as collector_config
from ggdefender.collector import export, relay_client
from ggdefender.collector.process import CollectorProcess
from ggdefender.remediation import config as remediation_config
from ggdefender.settings import ConfigError
from ggdefender.supervisor import relay_server
from ggdefender.supervisor.relay_guard import ContentGuard

THING = "thingE"
DEFENDER = f"$aws/things/{THING}/defender/metrics/json"
EXPORTED = f"$aws/rules/ggdefender_fleet/things/{THING}/defender/metrics/json"


# -- the setting ---------------------------------------------------------------------------------------------
def test_rule_name_rule_is_the_iot_api_models():
    shape = botocore.session.get_session().get_service_model("iot").shape_for("RuleName")
    assert shape.metadata["pattern"] == topics.RULE_NAME_PATTERN
    assert shape.metadata["max"] == topics.RULE_NAME_MAX and shape.metadata["min"] == 1
    assert re.fullmatch(topics.RULE_NAME_PATTERN, topics.DEFAULT_EXPORT_RULE)


def test_export_is_off_by_default_and_each_mode_parses():
    assert collector_config.parse({}).export == export.ExportSettings(mode="off")
    assert collector_config.parse({}).export.topics(THING) == ()
    st = collector_config.parse({"Export": {"Mode": "ALSO", "RuleName": "fleet_2"}}).export
    assert st.mode == "also" and st.topic(THING, "cbor") == f"$aws/rules/fleet_2/things/{THING}/defender/metrics/cbor"
    assert collector_config.parse({"Export": {"Mode": "only"}}).export.topics(THING) == (
        EXPORTED, EXPORTED[:-4] + "cbor")
    assert export.parse({"Mode": False}).mode == "off"  # YAML's bare `off`


@pytest.mark.parametrize("section, fragment", [
    ({"Mode": "sometimes"}, "Collector.Export.Mode: expected one of off, also, only"),
    ({"RuleName": "my-rule"}, "Collector.Export.RuleName: 'my-rule' is not a topic rule name"),
    ({"RuleName": "r\n"}, "is not a topic rule name"),
    ({"RuleName": "x" * 129}, "longer than 128"),
    ({"RuleName": ""}, "must not be empty"),
    ({"RuleNme": "x"}, "Collector.Export: unknown key(s) RuleNme (did you mean RuleName?)"),
    ("also", "Export: expected an object"),
])
def test_a_bad_export_rejects_the_collector_section(section, fragment):
    with pytest.raises(ConfigError) as e:
        collector_config.parse({"Export": section, "PublishQos": 7})
    assert fragment in str(e.value) and "PublishQos" in str(e.value), str(e.value)  # every problem listed


def test_a_set_config_job_can_never_be_allowed_to_change_export():
    with pytest.raises(ConfigError, match="'Collector/Export' can never be changed by a job"):
        remediation_config.parse({"SetConfigAllowedKeys": ["Collector/Export"]})


# -- the collector's publishes ---------------------------------------------------------------------------------
def _collector(tmp_path, source, export_section):
    ipc = FakeIpc({"Collector": {"Export": export_section}, "Plugins": {"Enabled": False}}, thing=THING)
    proc = CollectorProcess(ipc, THING, str(tmp_path), source=source("basic"))
    proc.configure(ipc.config)
    return ipc, proc.collector


def test_mode_also_publishes_the_same_bytes_to_defender_then_the_rule(tmp_path, source):
    ipc, svc = _collector(tmp_path, source, {"Mode": "also"})
    built = svc.collect_and_publish()
    assert [(t, p) for t, p, _ in ipc.iot] == [(DEFENDER, built.payload), (EXPORTED, built.payload)]
    assert svc.exported == 1


def test_mode_also_an_export_failure_is_said_once_and_never_fails_the_report(tmp_path, source, caplog):
    caplog.set_level(logging.INFO, "ggdefender.collector")
    ipc, svc = _collector(tmp_path, source, {"Mode": "also"})
    real = ipc.publish_iot

    def refuse_rule(topic, payload, qos=1):
        if topic.startswith("$aws/rules/"):
            raise RuntimeError("not authorized")
        real(topic, payload, qos)

    ipc.publish_iot = refuse_rule  # type: ignore[method-assign]
    ids = [svc.collect_and_publish().report_id for _ in range(3)]
    assert ids == sorted(set(ids)) and [t for t, _, _ in ipc.iot] == [DEFENDER] * 3
    said = [r for r in caplog.records if "not exported" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.ERROR and "not authorized" in said[0].getMessage()
    assert svc.export_failures == 3 and svc.failures == 0
    ipc.publish_iot = real  # type: ignore[method-assign]
    svc.collect_and_publish()
    assert "reports reach the export rule again" in caplog.text


@pytest.fixture
def doc(monkeypatch):
    h = health.Health()
    monkeypatch.setattr(health, "process_health", lambda: h)
    return h


def test_mode_only_publishes_to_the_rule_alone_and_says_exported(tmp_path, source, doc):
    ipc, svc = _collector(tmp_path, source, {"Mode": "only", "RuleName": "mine"})
    built = svc.collect_and_publish()
    rule_topic = topics.export("mine", THING, "json")
    assert [(t, p) for t, p, _ in ipc.iot] == [(rule_topic, built.payload)]
    last = doc.get("lastReport")  # no accepted/rejected reply comes on a rule topic
    assert last["status"] == "EXPORTED" and last["reportId"] == built.report_id
    assert doc.document()["status"] == "ok"
    # a collect-now answer names where the report went
    svc._queue_collect({"requestId": "r1"})
    svc._tick(svc._drain_commands())
    assert ipc.local[-1][1]["topic"] == rule_topic


def test_mode_only_a_failed_publish_fails_the_report(tmp_path, source, doc):
    ipc, svc = _collector(tmp_path, source, {"Mode": "only"})
    ipc.fail_publishes = 1
    svc._tick()
    assert svc.failures == 1 and ipc.iot == [] and doc.get("lastReport")["status"] == "PUBLISH_FAILED"
    svc._tick()
    assert [t for t, _, _ in ipc.iot] == [EXPORTED] and doc.get("lastReport")["status"] == "EXPORTED"


# -- process A: the relay policy and guard -------------------------------------------------------------------
def _report(rid: int) -> bytes:
    return json.dumps({"header": {"report_id": rid, "version": "1.0"},
                       "metrics": {"listening_tcp_ports": {"ports": [{"port": 22}], "total": 1}}}).encode()


class Pair:
    """Process A's relay server over process A's (fake) IPC, whose configuration is A's own view; B's client."""

    def __init__(self, a_config):
        self.fake = FakeIpc(a_config, thing=THING)
        a, b = relay_wire.socket_pair()
        self.server = relay_server.RelayServer(a, self.fake, THING).start()
        self.client = relay_client.RelayClient(b, timeout=30).connect()

    def published(self):
        return [t for t, _, _ in self.fake.iot]

    def close(self):
        self.client.close()
        self.server.close()
        self.server.join(10)


@pytest.fixture
def relay():
    pairs = []

    def make(export_section):
        pairs.append(Pair({"Collector": {"Export": export_section}}))
        return pairs[-1]
    yield make
    for p in pairs:
        p.close()


def test_b_may_publish_exactly_the_export_topic_a_configured(relay):
    pair = relay({"Mode": "also", "RuleName": "ggdefender_fleet"})
    pair.client.publish_iot(DEFENDER, _report(5))
    pair.client.publish_iot(EXPORTED, _report(5))  # the same report to the rule: mode "also"
    for forged in (f"$aws/rules/other/things/{THING}/defender/metrics/json",  # B cannot pick the rule
                   f"$aws/rules/ggdefender_fleet/things/other/defender/metrics/json",
                   "$aws/rules/ggdefender_fleet/anything", "$aws/rules/ggdefender_fleet/things/x/../y"):
        with pytest.raises(relay_wire.RelayDenied, match="relay policy: publish_iot on topic"):
            pair.client.publish_iot(forged, _report(6))
    with pytest.raises(relay_wire.RelayDenied, match="not above the last relayed report_id 5"):
        pair.client.publish_iot(EXPORTED, _report(5))  # a replay to the rule
    with pytest.raises(relay_wire.RelayError, match="report"):
        pair.client.publish_iot(EXPORTED, b'{"not": "a report"}')  # the guard checks the structure
    assert pair.published() == [DEFENDER, EXPORTED]


def test_a_follows_its_own_configuration_not_b(relay):
    pair = relay({"Mode": "off"})
    with pytest.raises(relay_wire.RelayDenied, match="Collector.Export is off"):
        pair.client.publish_iot(EXPORTED, _report(1))
    pair.fake.config["Collector"]["Export"] = {"Mode": "only", "RuleName": "mine"}
    with pytest.raises(relay_wire.RelayDenied, match="not allowed"):
        pair.client.publish_iot(EXPORTED, _report(1))  # the default rule is not the configured one
    mine = topics.export("mine", THING, "json")
    pair.client.publish_iot(mine, _report(1))
    pair.fake.config["Collector"]["Export"] = {"Mode": "only", "RuleName": "bad-name"}
    with pytest.raises(relay_wire.RelayDenied, match="could not be read"):
        pair.client.publish_iot(mine, _report(2))  # A cannot tell: nothing under $aws/rules/ is allowed
    assert pair.published() == [mine]


def test_a_collect_now_answer_may_name_the_export_topic_of_a_relayed_report():
    guard = ContentGuard(THING)
    guard.delivered(topics.COLLECTOR_COMMANDS, {"command": "collect-now", "requestId": "r"})
    assert guard.check_iot(EXPORTED, _report(3)) == 3
    guard.relayed_report(EXPORTED, 3)
    guard.check_local(topics.COLLECTOR_EVENTS,
                      {"event": "report-published", "requestId": "r", "reportId": 3, "topic": EXPORTED})
    assert guard.report_topic(f"$aws/rules/r/things/{THING}/defender/metrics/xml") is None
