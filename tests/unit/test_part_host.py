"""The part contract and its host (ggdefender.part): each section goes to its part, a rejected one keeps the last
good one and is reported, parts start in order and close in reverse even when one close fails; every part of
both processes has the contract's shape."""

import subprocess
import sys
from pathlib import Path

import pytest

import real_counterparts
from ggdefender.part import Part, PartHost
from ggdefender.settings import ConfigError


class Fake:
    """A part whose section is {"Value": int}; records what happened to it in `log`."""

    def __init__(self, section, log, *, fail_close=False, fail_start=False, bug=False):
        self.section, self.log = section, log
        self.value = None
        self.fail_close, self.fail_start, self.bug = fail_close, fail_start, bug

    def reconfigure(self, section):
        if self.bug:
            raise KeyError("a bug, not a configuration error")
        if not isinstance(section, dict) or not isinstance(section.get("Value"), int):
            raise ConfigError(f"{self.section}.Value: expected an integer")
        self.value = section["Value"]
        self.log.append(("reconfigure", self.section, self.value))

    def start(self):
        self.log.append(("start", self.section))
        if self.fail_start:
            raise RuntimeError(f"{self.section} cannot start")

    def close(self):
        self.log.append(("close", self.section))
        if self.fail_close:
            raise OSError("disk full")


def test_each_section_goes_to_its_own_part_in_order(tmp_path, doc):
    log = []
    a, b = Fake("Alpha", log), Fake("Beta", log)
    host = PartHost(None, str(tmp_path), [a, b])
    verdicts = host.configure({"Beta": {"Value": 2}, "Alpha": {"Value": 1}, "Other": {"Value": 3}})
    assert verdicts == {"Alpha": True, "Beta": True}
    assert log == [("reconfigure", "Alpha", 1), ("reconfigure", "Beta", 2)]
    assert host["Beta"] is b and doc.get("configuration.Alpha")["accepted"] is True


def test_a_rejected_section_keeps_the_last_good_one_and_is_reported(tmp_path, doc):
    log = []
    a, b = Fake("Alpha", log), Fake("Beta", log)
    host = PartHost(None, str(tmp_path), [a, b])
    host.configure({"Alpha": {"Value": 1}, "Beta": {"Value": 2}})
    assert host.configure({"Alpha": {"Value": "x"}, "Beta": {"Value": 5}}) == {"Alpha": False, "Beta": True}
    assert (a.value, b.value) == (1, 5)  # the other part is configured all the same
    verdict = doc.get("configuration.Alpha")
    assert verdict["accepted"] is False and verdict["usingLastGood"] is True
    assert "Alpha.Value: expected an integer" in verdict["reason"]

    # a new process on the same state folder: the rejected section runs on the saved last good one
    again = Fake("Alpha", [])
    PartHost(None, str(tmp_path), [again]).configure({"Alpha": {"Value": "x"}})
    assert again.value == 1 and doc.get("configuration.Alpha")["usingLastGood"] is True


def test_a_part_failing_with_a_bug_is_reported_and_the_others_still_configured(tmp_path, doc, caplog):
    log = []
    broken, b = Fake("Alpha", log, bug=True), Fake("Beta", log)
    host = PartHost(None, str(tmp_path), [broken, b])
    assert host.configure({"Alpha": {"Value": 1}, "Beta": {"Value": 2}}) == {"Alpha": False, "Beta": True}
    assert "Alpha configuration could not be applied" in caplog.text
    verdict = doc.get("configuration.Alpha")
    assert verdict["accepted"] is False and "KeyError" in verdict["reason"] and verdict["usingLastGood"] is False


def test_parts_start_in_order_and_close_in_reverse_even_when_one_close_fails(tmp_path, caplog):
    log = []
    parts = [Fake("Alpha", log), Fake("Beta", log, fail_close=True), Fake("Gamma", log)]
    host = PartHost(None, str(tmp_path), parts)
    host.start()
    host.close()
    host.close()  # once only
    assert log == [("start", "Alpha"), ("start", "Beta"), ("start", "Gamma"),
                   ("close", "Gamma"), ("close", "Beta"), ("close", "Alpha")]
    assert "closing Beta failed" in caplog.text


def test_a_part_that_cannot_start_closes_every_part_and_raises(tmp_path):
    log = []
    host = PartHost(None, str(tmp_path), [Fake("Alpha", log), Fake("Beta", log, fail_start=True), Fake("Gamma", log)])
    with pytest.raises(RuntimeError, match="Beta cannot start"):
        host.start()
    assert log == [("start", "Alpha"), ("start", "Beta"), ("close", "Gamma"), ("close", "Beta"), ("close", "Alpha")]


def test_two_parts_cannot_read_one_section(tmp_path):
    with pytest.raises(ValueError, match="same configuration section"):
        PartHost(None, str(tmp_path), [Fake("Alpha", []), Fake("Alpha", [])])


def test_a_replaced_part_falls_back_to_the_saved_section_like_at_start_up(tmp_path, doc):
    first = Fake("Alpha", [])
    host = PartHost(None, str(tmp_path), [first])
    host.configure({"Alpha": {"Value": 1}})
    second = Fake("Alpha", [])  # e.g. the remediation listener restarted after a failure
    host.replace(second)
    host.configure({"Alpha": {"Value": "x"}})
    assert host["Alpha"] is second and second.value == 1


def test_every_part_of_both_processes_has_the_contract(tmp_path):
    from ggdefender.collector.service import CollectorService
    from ggdefender.collector.process import CollectorProcess
    from ggdefender.detect.service import DetectService
    from ggdefender.plugins.host import PluginHost
    from ggdefender.remediation.listener import RemediationListener
    from ggdefender.supervisor.section import SupervisorSection

    sections = {}
    for cls in (CollectorService, PluginHost, DetectService, RemediationListener, SupervisorSection):
        assert all(callable(getattr(cls, name, None)) for name in ("reconfigure", "start", "close")), cls
        sections[cls.section] = cls
    assert sorted(sections) == ["Collector", "Detect", "Plugins", "Remediation", "Supervisor"]

    class Ipc:
        thing_name = "thingP"

    proc = CollectorProcess(Ipc(), "thingP", str(tmp_path))
    try:
        assert all(isinstance(p, Part) for p in proc.parts)
        # consumers first: the collector starts last and closes first, detect closes last (saves its history)
        assert [p.section for p in proc.parts] == ["Detect", "Plugins", "Collector"]
        assert proc.collector.plugins is proc.plugins and proc.collector.observers == [proc.detect]
    finally:
        proc.close()


def test_process_a_host_holds_the_supervisor_section_and_each_listener_incarnation(tmp_path, doc):
    from ggdefender.remediation.listener import RemediationListener
    from ggdefender.supervisor.section import SUPERVISOR_NOTE, SupervisorSection

    class Ipc:
        thing_name = "thingA"
        section = {"AllowedOperations": ["collect-now"]}

        def get_config(self, key_path=None, component=None):
            return self.section

    ipc = Ipc()
    host = PartHost(ipc, str(tmp_path), [SupervisorSection()], notes={"Supervisor": SUPERVISOR_NOTE})
    assert host.configure_part(host["Supervisor"], {"StopTimeoutSeconds": 5}) is True
    assert host["Supervisor"].settings.stop_timeout == 5
    assert doc.get("configuration.Supervisor")["reason"] == SUPERVISOR_NOTE
    assert host.configure_part(host["Supervisor"], {"StopTimeoutSeconds": 0}) is False
    assert host["Supervisor"].settings.stop_timeout == 5  # judged now, the last good one kept

    first = RemediationListener(ipc, "thingA", tmp_path, host=host)
    first._load_settings()
    assert host["Remediation"] is first and list(first.settings.allowed_operations) == ["collect-now"]
    ipc.section = {"AllowedOperations": ["collect-now"], "AllowRunCommand": True}  # invalid
    restarted = RemediationListener(ipc, "thingA", tmp_path, host=host)  # after a failure of the first
    restarted._load_settings()
    assert host["Remediation"] is restarted and list(restarted.settings.allowed_operations) == ["collect-now"]
    assert doc.get("configuration.Remediation")["usingLastGood"] is True
    host.close()
    assert restarted._stop.is_set()  # close ends its loop


ROOT = Path(__file__).resolve().parents[2]
PARTS = {"ggdefender.collector.service": "CollectorService", "ggdefender.plugins.host": "PluginHost",
         "ggdefender.detect.service": "DetectService", "ggdefender.remediation.listener": "RemediationListener",
         "ggdefender.supervisor.section": "SupervisorSection"}


def _mypy(tmp_path, source: str) -> subprocess.CompletedProcess:
    try:
        import mypy  # noqa: F401
    except ImportError:
        real_counterparts.unavailable("mypy", "pip install -e '.[dev]' (pins mypy) in the project's venv")
    check = tmp_path / "parts_check.py"
    check.write_text(source)
    # pyproject.toml's [tool.mypy]; the part modules are followed silently, the check itself strictly
    return subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", str(check),
                           "components/ggdefender/part.py", "components/ggdefender/collector/process.py"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_every_part_keeps_the_contract_by_the_type_checker(tmp_path):
    lines = ["from ggdefender.part import Part"]
    lines += [f"from {module} import {cls}" for module, cls in PARTS.items()]
    lines += [f"def _{cls}(p: {cls}) -> Part:\n    return p" for cls in PARTS.values()]
    out = _mypy(tmp_path, "\n".join(lines) + "\n")
    assert out.returncode == 0, out.stdout + out.stderr
    # and the check can fail: a part whose reconfigure takes no section is not a Part
    out = _mypy(tmp_path, "from ggdefender.part import Part\n\n\nclass Half:\n    section = 'X'\n\n"
                          "    def reconfigure(self) -> None: ...\n\n    def start(self) -> None: ...\n\n"
                          "    def close(self) -> None: ...\n\n\n_p: Part = Half()\n")
    assert out.returncode == 1 and 'variable has type "Part"' in out.stdout, out.stdout + out.stderr


def test_follow_dispatches_each_changed_section_until_closed(tmp_path, doc):
    import threading

    class Sub:
        closed = False

        def close(self):
            self.closed = True

    class Ipc:
        def __init__(self):
            self.config = {"Alpha": {"Value": 1}, "Beta": {"Value": 2}}
            self.handlers, self.sub = [], Sub()

        def subscribe_config(self, handler, component=None):
            self.handlers.append(handler)
            return self.sub

        def get_config(self, key_path=None, component=None):
            return self.config[key_path[0]] if key_path else self.config

    log, seen = [], threading.Event()

    class Seen(Fake):
        def reconfigure(self, section):
            super().reconfigure(section)
            seen.set()

    ipc = Ipc()
    a, b = Seen("Alpha", log), Seen("Beta", log)
    host = PartHost(ipc, str(tmp_path), [a, b])
    host.configure(ipc.config)
    log.clear()
    following = host.follow(ipc)
    try:
        ipc.config["Beta"] = {"Value": 5}
        seen.clear()
        ipc.handlers[0](["Beta", "Value"])
        assert seen.wait(30)
        assert log == [("reconfigure", "Beta", 5)]  # only the part whose section changed
        ipc.config["Alpha"] = {"Value": "x"}
        seen.clear()
        ipc.handlers[0](["Alpha"])
        for _ in range(600):  # the verdict arrives on the host's thread
            if doc.get("configuration.Alpha")["accepted"] is False:
                break
            threading.Event().wait(0.05)
        assert doc.get("configuration.Alpha")["usingLastGood"] is True and a.value == 1
    finally:
        following.close()
    assert ipc.sub.closed


def test_an_unreachable_ipc_while_configuring_is_not_taken_for_a_rejection(tmp_path, doc):
    from ggdefender.ipc import IpcUnavailable

    class Gone(Fake):
        def reconfigure(self, section):
            raise IpcUnavailable("relay to the supervisor lost")

    host = PartHost(None, str(tmp_path), [Gone("Alpha", [])])
    with pytest.raises(IpcUnavailable):
        host.configure({"Alpha": {"Value": 1}})
    assert doc.get("configuration.Alpha") is None
