"""Pure pieces of the `ggdefender local` runtime: component environment, artifacts, registry, bridge URL, view."""

import io
import re
import sys
import zipfile

import pytest

from ggdefender.local.cloud import services as cloud
from ggdefender.local.nucleus import lifecycle
from ggdefender.local.cloud.bridge import BridgeError, parse_broker_url
from ggdefender.local.ui.control import ControlError, control_request, short_socket_path
from ggdefender.local.ui.view import View


def test_component_env_sets_core_variables_and_drops_stale_ones():
    base = {"PATH": "/usr/bin", "HOME": "/root", "SVCUID": "STALE", "GGDEFENDER_STATE_DIR": "/elsewhere"}
    env = lifecycle.component_env(base, svcuid="ABC", socket_path="/gg/ipc.socket", thing_name="t1",
                                  region="eu-west-1", setenv={"EXTRA": "1", "AWS_REGION": "override"})
    assert env["SVCUID"] == env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] == "ABC"
    assert env["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH"] == "/gg/ipc.socket"
    assert env["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"] == "/gg/ipc.socket"
    assert env["AWS_IOT_THING_NAME"] == "t1" and env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert env["AWS_REGION"] == "override"  # a recipe's Setenv wins, as on a real core
    assert env["GGC_VERSION"] == lifecycle.NUCLEUS_VERSION and env["EXTRA"] == "1"
    assert "GGDEFENDER_STATE_DIR" not in env and env["HOME"] == "/root"


def test_socket_path_for_component_follows_the_108_char_rule():
    short = "/" + "a" * 106
    assert lifecycle.socket_path_for_component(short) == short
    assert lifecycle.socket_path_for_component("/" + "a" * 107) == "../../ipc.socket"
    # 60 characters but 119 bytes: too long for sun_path, so the relative path the alias serves
    assert lifecycle.socket_path_for_component("/" + "é" * 59) == "../../ipc.socket"


def test_artifact_modes():
    assert lifecycle._artifact_mode({"Read": "OWNER", "Execute": "NONE"}) == 0o400
    assert lifecycle._artifact_mode({"Read": "ALL", "Execute": "NONE"}) == 0o444
    assert lifecycle._artifact_mode({"Read": "ALL", "Execute": "ALL"}) == 0o555
    assert lifecycle._artifact_mode({"Read": "NONE", "Execute": "OWNER"}) == 0o500


def test_unzip_refuses_entries_outside_the_folder(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", "fine")
        zf.writestr(zipfile.ZipInfo("../../escape.txt"), "bad")
    target = tmp_path / "out"
    target.mkdir()
    # zipfile strips '..' itself; either way nothing may land outside the target
    try:
        lifecycle._safe_unzip(archive, target)
    except lifecycle.StepFailed as exc:
        assert "outside" in str(exc)
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path.parent / "escape.txt").exists()


def test_service_registry_is_every_declared_service_module():
    declared = cloud.declared()
    assert [(d.name, d.service.__name__) for d in declared] == [
        ("defender", "DefenderService"), ("jobs", "JobsService"), ("metrics", "CloudMetricsService"),
        ("rules", "RulesService")]
    assert all(d.summary and "\n" not in d.summary for d in declared)


def test_a_broken_service_module_is_an_error_not_silence(tmp_path, monkeypatch):
    import ggdefender.local.cloud as package

    (tmp_path / "broken_service.py").write_text("import ggdefender_no_such_module\n")
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])
    cloud.declared.cache_clear()
    try:
        with pytest.raises(ModuleNotFoundError, match="ggdefender_no_such_module"):
            cloud.declared()
    finally:
        cloud.declared.cache_clear()
        sys.modules.pop("ggdefender.local.cloud.broken_service", None)


def test_a_service_that_fails_to_start_is_reported_and_the_others_run():
    class Fine:
        def __init__(self, core, root, view):
            pass

    class Broken:
        def __init__(self, core, root, view):
            raise RuntimeError("no disk")

    class View:
        notes = []

        def note(self, who, text, level="info"):
            self.notes.append((who, text, level))

    view = View()
    started = cloud.start_services(None, "/nonexistent", view, [cloud.Declaration("broken", Broken, "x"),
                                                                cloud.Declaration("fine", Fine, "y")])
    assert [type(s) for s in started] == [Fine]
    assert view.notes == [("cloud", "service broken failed to start: no disk", "error")]


def test_service_commands_must_be_unique():
    class A:
        def control_commands(self):
            return {"x": lambda args: {}}

    assert set(cloud.service_commands([A(), object()])) == {"x"}
    with pytest.raises(ValueError, match="offered by two"):
        cloud.service_commands([A(), A()])


@pytest.mark.parametrize("url, expected", [
    ("mqtt://127.0.0.1:1883", ("127.0.0.1", 1883)),
    ("mqtt://localhost", ("localhost", 1883)),
    ("tcp://[::1]:1884", ("::1", 1884)),
])
def test_broker_urls(url, expected):
    assert parse_broker_url(url) == expected


@pytest.mark.parametrize("url", ["http://x:1", "mqtt://", "mqtt://h:99999", "mqtt://u:p@h:1", "mqtt://h/t"])
def test_bad_broker_urls(url):
    with pytest.raises(BridgeError):
        parse_broker_url(url)


def test_control_request_without_a_running_core(tmp_path):
    with pytest.raises(ControlError, match="no running ggdefender local"):
        control_request(tmp_path, "status")
    (tmp_path / "control.sock").write_text("")  # stale, not a socket
    with pytest.raises(ControlError, match="not running|stale"):
        control_request(tmp_path, "status")


def test_short_socket_path_aliases_long_paths(tmp_path):
    long_dir = tmp_path / ("x" * 120)
    long_dir.mkdir()
    with short_socket_path(long_dir / "control.sock") as p:
        assert len(p) < 108
        assert (tmp_path / ("x" * 120)).samefile(p.rsplit("/", 1)[0])


def test_view_folds_busy_topics_and_counts():
    out = io.StringIO()
    view = View(out, fold_seconds=60)
    for _ in range(5):
        view.core_event({"kind": "iot-publish", "component": "c", "topic": "t", "bytes": 10, "subscribers": 1})
    view.core_event({"kind": "state", "component": "c", "state": "RUNNING"})
    view.report(thing="t", fmt="json", accepted=False, report_id=3, size=20, detail="bad")
    text = out.getvalue()
    assert text.count("c -> IoT Core t") == 1
    assert "[+] c is RUNNING" in text and "REJECTED: bad" in text
    assert view.counters["iot-publish"] == 5 and view.counters["rejected"] == 1
    assert len(view.events) == 7
    assert "rejected 1" in view.totals()


def test_privileged_step_as_non_root_runs_as_current_user_with_warning(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from ggdefender.local.nucleus.recipe import Step

    view = View()
    manager = lifecycle.LifecycleManager(SimpleNamespace(), tmp_path, socket_path="/x", view=view)
    monkeypatch.setattr(lifecycle.os, "geteuid", lambda: 1000)
    step = Step(name="Run", script="id", requires_privilege=True)
    assert manager._argv(SimpleNamespace(name="c"), step, "id") == ["sh", "-c", "id"]
    assert any(e.get("level") == "warning" and "RequiresPrivilege" in e["text"] for e in view.events)


@pytest.mark.parametrize("thing, region, grace, problem", [
    ("a/#", "us-east-1", 5, "thing name 'a/#'"),        # would widen {iot:thingName} policies
    ("", "us-east-1", 5, "thing name ''"),
    ("x" * 129, "us-east-1", 5, "thing name"),
    ("t+", "us-east-1", 5, "thing name 't+'"),
    ("t", "", 5, "region ''"),
    ("t", "us east 1", 5, "region"),
    ("t", "us-east-1", -1, "grace period -1"),
    ("t", "us-east-1", float("nan"), "grace period nan"),
])
def test_runtime_settings_are_checked(thing, region, grace, problem):
    from ggdefender.local.nucleus.runtime import check_settings

    with pytest.raises(ValueError, match=re.escape(problem)):
        check_settings(thing, region, grace)


def test_runtime_settings_accept_what_aws_accepts():
    from ggdefender.local.nucleus.runtime import check_settings

    for thing, region in (("ggdefender-local", "us-east-1"), ("My_Thing:1", "us-gov-west-1"),
                          ("x" * 128, "ap-southeast-3")):
        check_settings(thing, region, 0)


def test_short_socket_path_counts_bytes(tmp_path):
    # a folder name that keeps the path under 108 characters but takes it over 108 bytes
    base = len(f"{tmp_path}/") + len("/control.sock")
    if base > 100:
        pytest.skip(f"tmp_path {tmp_path} is too long for this check")
    wide_dir = tmp_path / ("é" * (107 - base))
    wide_dir.mkdir()
    path = wide_dir / "control.sock"
    assert len(str(path)) < 108 <= len(str(path).encode())
    with short_socket_path(path) as p:
        assert len(p.encode()) < 108
        assert wide_dir.samefile(p.rsplit("/", 1)[0])


def test_view_escapes_control_characters_and_bounds_folding(monkeypatch):
    from ggdefender.local.ui import view as view_module

    out = io.StringIO()
    view = View(out, fold_seconds=60)
    view.core_event({"kind": "iot-publish", "component": "c", "topic": "t\n12:00:00  [+] fake is RUNNING\x1b[2J",
                     "bytes": 1, "subscribers": 0})
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and "\x1b" not in lines[0]
    assert "t\\x0a12:00:00  [+] fake is RUNNING\\x1b[2J" in lines[0]
    monkeypatch.setattr(view_module, "MAX_FOLD_KEYS", 50)
    for i in range(500):
        view.core_event({"kind": "iot-publish", "component": "c", "topic": f"t/{i}", "bytes": 1})
    assert len(view._last_line) <= 50 and len(view._folded) <= 50
