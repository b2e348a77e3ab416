"""Remediation's section through config_store.LastGood: a section rejected at start runs on the saved last good
one (not on defaults, which could be wider than what the operator allowed), and says so in health."""

import pytest

from ggdefender import health
from ggdefender.remediation.listener import RemediationListener


class Ipc:
    thing_name = "thingR"

    def __init__(self, section):
        self.section = section

    def get_config(self, key_path=None, component=None):
        return self.section


@pytest.fixture
def doc(monkeypatch):
    h = health.Health()
    monkeypatch.setattr(health, "process_health", lambda: h)
    return h


NARROW = {"AllowedOperations": ["collect-now"]}
INVALID = {"AllowedOperations": ["collect-now"], "AllowRunCommand": True}  # no RunCommandExecutables


def test_a_section_rejected_at_start_runs_on_the_saved_narrow_one(tmp_path, doc):
    first = RemediationListener(Ipc(NARROW), "thingR", tmp_path)
    first._load_settings()
    assert list(first.settings.allowed_operations) == ["collect-now"]
    assert doc.get("configuration.Remediation")["accepted"] is True

    restarted = RemediationListener(Ipc(INVALID), "thingR", tmp_path)  # a new process, same work folder
    restarted._load_settings()
    assert list(restarted.settings.allowed_operations) == ["collect-now"] and restarted.config_error is None
    verdict = doc.get("configuration.Remediation")
    assert verdict["accepted"] is False and verdict["usingLastGood"] is True
    assert "RunCommandExecutables" in verdict["reason"]


def test_without_a_saved_section_jobs_are_refused_with_the_reason(tmp_path, doc):
    listener = RemediationListener(Ipc(INVALID), "thingR", tmp_path)
    listener._load_settings()
    assert listener.settings is None and "RunCommandExecutables" in listener.config_error
    assert doc.get("configuration.Remediation")["usingLastGood"] is False
