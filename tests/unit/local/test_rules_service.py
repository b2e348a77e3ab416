"""The offline Basic Ingest rules sink of `ggdefender local` (local/cloud/rules_service.py)."""

import base64
import json

import cbor2

from ggdefender.local.cloud import rules_service
from ggdefender.local.cloud.rules_service import RulesService, messages_path


class Core:
    """The one thing the sink uses of the core: a cloud-side IoT Core subscription."""

    def __init__(self):
        self.subs = []

    def subscribe_iot(self, topic_filter, callback):
        self.subs.append((topic_filter, callback))
        return lambda: self.subs.remove((topic_filter, callback))

    def publish(self, topic, payload):
        for _, callback in list(self.subs):
            callback(topic, payload, "component")


def _lines(root, rule):
    return [json.loads(line) for line in messages_path(root, rule).read_text().splitlines()]


def test_each_rule_keeps_the_exact_bytes_it_received(tmp_path):
    core = Core()
    sink = RulesService(core, tmp_path)
    assert core.subs[0][0] == "$aws/rules/#"
    report = cbor2.dumps({"hed": {"rid": 1, "v": "1.0"}})
    core.publish("$aws/rules/fleet/things/t/defender/metrics/cbor", report)
    core.publish("$aws/rules/fleet/things/t/defender/metrics/json", b'{"a": 1}')
    core.publish("$aws/rules/other/x", b"y")
    cbor_line, json_line = _lines(tmp_path, "fleet")
    assert base64.b64decode(cbor_line["payloadBase64"]) == report and "json" not in cbor_line
    assert json_line["json"] == {"a": 1} and json_line["topic"].endswith("/json")
    assert sink.control_commands()["rules-messages"]({}) == {"counts": {"fleet": 2, "other": 1}}
    sink.close()
    assert core.subs == []


def test_names_that_are_no_rule_and_too_many_rules_are_dropped(tmp_path, monkeypatch, caplog):
    core = Core()
    RulesService(core, tmp_path)
    for bad in ("..", "a-b", ""):
        core.publish(f"$aws/rules/{bad}/x", b"1")
    assert not (tmp_path / "cloud" / "rules").exists() or list((tmp_path / "cloud" / "rules").iterdir()) == []
    assert "is not a topic rule name" in caplog.text
    monkeypatch.setattr(rules_service, "MAX_RULES", 2)
    for name in ("r1", "r2", "r3"):
        core.publish(f"$aws/rules/{name}/x", b"1")
    assert sorted(p.name for p in (tmp_path / "cloud" / "rules").iterdir()) == ["r1", "r2"]
    assert "over 2 rules" in caplog.text
