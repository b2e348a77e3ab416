"""The lifecycle runner of `ggdefender local` with a real component using the unmodified awsiotsdk client."""

import json
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from ggdefender.local.ui.harness import LocalCore

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[2] / "data" / "components"
RECIPES = DATA / "recipes"
ARTIFACTS = DATA / "artifacts"
ECHO = {"test.Echo": "1.0.0"}
PYTHON = {"test.Echo": {"MERGE": {"Python": sys.executable}}}


def _events(core, name="test.Echo"):
    path = core.work_dir(name) / "events.log"
    return path.read_text().splitlines() if path.exists() else []


def _ready(status_capture, count=1, timeout=60):
    status_capture.wait_for(lambda m: sum(1 for x in m if x[1].get("event") == "ready") >= count, timeout)
    return [x[1] for x in status_capture if x[1].get("event") == "ready"]


def test_install_run_environment_logs_and_iot_round_trip(tmp_path):
    with LocalCore(tmp_path / "gg", thing="testThing") as core:
        status = core.capture_local("test/echo/status")
        core.deploy(RECIPES, ARTIFACTS, ECHO, update_config=PYTHON)
        core.wait_for_state("test.Echo", "RUNNING")
        ready = _ready(status)[0]
        assert ready["hello"] == "ok"
        assert ready["greeting"] == "hello testThing from normal"  # Setenv with recipe variables

        env = json.loads((core.work_dir("test.Echo") / "env.json").read_text())
        svcuid = core.core.component("test.Echo").svcuid
        assert env["SVCUID"] == svcuid and env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] == svcuid
        assert env["AWS_IOT_THING_NAME"] == "testThing"
        assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
        assert env["GGC_VERSION"]
        socket_path = str((tmp_path / "gg" / "ipc.socket").resolve())
        assert env["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH"] == socket_path
        assert env["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"] == socket_path
        assert env["cwd"] == str(core.work_dir("test.Echo"))
        # artifacts were copied to the package store, read-only
        stored = tmp_path / "gg" / "packages" / "artifacts" / "test.Echo" / "1.0.0" / "echo.py"
        assert stored.is_file() and not stored.stat().st_mode & 0o222

        out = core.capture_iot("test/things/testThing/out")
        core.publish_iot("test/things/testThing/in", b"\x00binary\xff")
        out.wait_for(lambda m: len(m) == 1, 30)
        assert out[0][:2] == ("test/things/testThing/out", b"\x00binary\xff")

        # the component's stdout reaches its log through the core's reader thread, a moment after IPC
        core.wait_for_log("test.Echo", "Install: sh -c", "ready ok")
        assert (core.work_dir("test.Echo") / "install.log").read_text() == "install-ran\n"


def test_install_skipif_and_work_folder_survive_a_second_run(tmp_path):
    root = tmp_path / "gg"
    for _ in range(2):
        with LocalCore(root) as core:
            status = core.capture_local("test/echo/status")
            core.deploy(RECIPES, ARTIFACTS, ECHO, update_config=PYTHON)
            _ready(status)
    assert (root / "work" / "test.Echo" / "install.log").read_text() == "install-ran\n"
    log = (root / "logs" / "test.Echo.log").read_text()
    assert "Install: skipped (exists install-marker)" in log
    assert log.count("ready ok") == 2


def test_restart_component_over_ipc_keeps_the_work_folder(tmp_path):
    with LocalCore(tmp_path / "gg") as core:
        status = core.capture_local("test/echo/status")
        core.deploy(RECIPES, ARTIFACTS, ECHO, update_config=PYTHON)
        first = _ready(status)[0]
        seen = len(core.events("state"))
        core.publish_local("test/echo/in", {"command": "restart"})
        second = _ready(status, 2)[1]
        assert second["pid"] != first["pid"]
        states = [e["state"] for e in core.events("state")[seen:]]
        assert states[:2] == ["STOPPING", "FINISHED"] and "RUNNING" in states[2:]
        assert _events(core).count("start") == 2
        assert "command restart" in _events(core)
        assert core.log_text("test.Echo").count("Install: sh -c") == 1  # restart does not reinstall


def test_shutdown_step_runs_before_sigterm(tmp_path):
    with LocalCore(tmp_path / "gg") as core:
        status = core.capture_local("test/echo/status")
        core.deploy(RECIPES, ARTIFACTS, ECHO, update_config=PYTHON)
        _ready(status)
        work = core.work_dir("test.Echo")
    lines = (work / "events.log").read_text().splitlines()
    assert lines.index("shutdown-step") < lines.index("sigterm") < lines.index("exiting")
    assert core.state("test.Echo") == "FINISHED"


def test_failing_run_is_retried_then_broken(tmp_path):
    update = {"test.Echo": {"MERGE": {"Python": sys.executable, "Mode": "fail"}}}
    with LocalCore(tmp_path / "gg", retry_delay=0.05) as core:
        core.deploy(RECIPES, ARTIFACTS, ECHO, update_config=update)
        core.wait_for_state("test.Echo", "BROKEN")
        log = core.wait_for_log("test.Echo", "state ERRORED: Run exited with code 3 (error 1 of 3)", "state BROKEN")
        assert log.count("failing on purpose") == 3
        notes = [e["text"] for e in core.events("note") if e["component"] == "test.Echo"]
        assert any("BROKEN" in n for n in notes)


def test_update_state_errored_and_live_configuration(tmp_path):
    with LocalCore(tmp_path / "gg") as core:
        status = core.capture_local("test/echo/status")
        core.deploy(RECIPES, ARTIFACTS, ECHO, update_config=PYTHON)
        _ready(status)
        config = core.update_config("test.Echo", {"MERGE": {"Mode": "tuned"}})
        assert config["Mode"] == "tuned"
        status.wait_for(lambda m: any(x[1].get("event") == "config" and x[1].get("mode") == "tuned" for x in m), 30)
        core.update_config("test.Echo", {"RESET": ["/Mode"]})
        assert core.get_config("test.Echo", ["Mode"]) == "normal"
        # ERRORED reported over IPC is handled like a failed step: counted, then the component restarts
        first_pid = _ready(status)[0]["pid"]
        core.publish_local("test/echo/in", {"command": "errored"})
        second = _ready(status, 2)[1]
        assert second["pid"] != first_pid
        assert "state ERRORED: the component reported ERRORED (UpdateState) (error 1 of 3)" in core.log_text("test.Echo")


def _zipped_recipe(tmp_path: Path) -> tuple:
    recipes, artifacts = tmp_path / "recipes", tmp_path / "artifacts"
    doc = yaml.safe_load((RECIPES / "test.Echo-1.0.0.yaml").read_text())
    doc["ComponentName"] = "test.Zipped"
    manifest = doc["Manifests"][0]
    manifest["Lifecycle"]["Run"] = "{configuration:/Python} -u {artifacts:decompressedPath}/app/echo.py"
    manifest["Lifecycle"]["Setenv"]["ECHO_NAME"] = "test.Zipped"
    manifest["Artifacts"] = [{"URI": "s3://test-bucket/test.Zipped/1.0.0/app.zip", "Unarchive": "ZIP"}]
    recipes.mkdir()
    (recipes / "test.Zipped-1.0.0.yaml").write_text(yaml.safe_dump(doc))
    target = artifacts / "test.Zipped" / "1.0.0"
    target.mkdir(parents=True)
    with zipfile.ZipFile(target / "app.zip", "w") as zf:
        zf.write(ARTIFACTS / "test.Echo" / "1.0.0" / "echo.py", "echo.py")
    return recipes, artifacts


def test_zip_artifact_is_unarchived(tmp_path):
    recipes, artifacts = _zipped_recipe(tmp_path)
    with LocalCore(tmp_path / "gg") as core:
        status = core.capture_local("test/echo/status")
        core.deploy(recipes, artifacts, {"test.Zipped": "1.0.0"},
                    update_config={"test.Zipped": {"MERGE": {"Python": sys.executable}}})
        assert _ready(status)[0]["hello"] == "ok"
        unpacked = tmp_path / "gg" / "packages" / "artifacts-unarchived" / "test.Zipped" / "1.0.0" / "app" / "echo.py"
        assert unpacked.is_file()


@pytest.mark.parametrize("interpolate, expected", [(True, "ok"), (False, "UnauthorizedError")])
def test_thing_name_interpolation_decides_authorization(tmp_path, interpolate, expected):
    with LocalCore(tmp_path / "gg", interpolate_config=interpolate) as core:
        status = core.capture_local("test/echo/status")
        core.deploy(RECIPES, ARTIFACTS, ECHO, update_config=PYTHON)
        assert _ready(status)[0]["hello"] == expected
        resources = core.get_config("test.Echo", ["accessControl", "aws.greengrass.ipc.mqttproxy",
                                                  "test.Echo:mqttproxy:1", "resources"])
        if interpolate:
            assert resources == ["test/things/testThing/#"]
            assert not core.events("denied")
        else:
            assert resources == ["test/things/{iot:thingName}/#"]
            denied = core.events("denied")
            assert denied and denied[0]["topic"] == "test/things/testThing/hello"


def test_long_root_gets_relative_socket_path(tmp_path):
    root = tmp_path / ("r" * 60) / ("o" * 60)
    with LocalCore(root) as core:
        status = core.capture_local("test/echo/status")
        core.deploy(RECIPES, ARTIFACTS, ECHO, update_config=PYTHON)
        assert _ready(status)[0]["hello"] == "ok"
        env = json.loads((core.work_dir("test.Echo") / "env.json").read_text())
    assert env["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"] == "../../ipc.socket"
    assert len(env["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH"]) >= 108


def _shell_recipe(recipes: Path, name: str, lifecycle: dict, deps: dict = None) -> None:
    doc = {"RecipeFormatVersion": "2020-01-25", "ComponentName": name, "ComponentVersion": "1.0.0",
           "ComponentDependencies": deps or {}, "Manifests": [{"Lifecycle": lifecycle}]}
    (recipes / f"{name}-1.0.0.json").write_text(json.dumps(doc))


def test_dependencies_start_first_and_stop_last(tmp_path):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    order = tmp_path / "order.log"
    _shell_recipe(recipes, "test.Base", {
        "Startup": f"echo base-startup >> {order}",
        "Shutdown": f"echo base-shutdown >> {order}"})
    _shell_recipe(recipes, "test.App", {
        "Run": f"echo app-run >> {order}; exec sleep 600",
        "Shutdown": f"echo app-shutdown >> {order}"},
        deps={"test.Base": {"VersionRequirement": "^1.0.0"}, "aws.greengrass.Nucleus": {}})
    with LocalCore(tmp_path / "gg") as core:
        # only the app is merged: its dependency comes from the recipe folder
        core.deploy(recipes, None, {"test.App": "1.0.0"})
        core.wait_for_state("test.App", "RUNNING")
        assert core.state("test.Base") == "RUNNING"
    assert order.read_text().split() == ["base-startup", "app-run", "app-shutdown", "base-shutdown"]


def test_install_timeout_and_missing_artifact(tmp_path):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    _shell_recipe(recipes, "test.Slow", {"Install": {"Script": "sleep 30", "Timeout": 0.5}, "Run": "sleep 600"})
    _shell_recipe(recipes, "test.NoArt", {"Run": "true"})
    doc = json.loads((recipes / "test.NoArt-1.0.0.json").read_text())
    doc["Manifests"][0]["Artifacts"] = [{"URI": "s3://b/test.NoArt/1.0.0/missing.bin"}]
    (recipes / "test.NoArt-1.0.0.json").write_text(json.dumps(doc))
    with LocalCore(tmp_path / "gg", retry_delay=0.05) as core:
        core.deploy(recipes, None, {"test.Slow": "1.0.0"})
        core.wait_for_state("test.Slow", "BROKEN")
        assert "Install timed out after 0.5 s" in core.log_text("test.Slow")
        from ggdefender.local.nucleus.recipe_error import RecipeError
        with pytest.raises(RecipeError, match="artifact missing.bin .* not found"):
            core.deploy(recipes, tmp_path, {"test.NoArt": "1.0.0"})
        assert "test.NoArt" not in core.core.components()  # nothing half-done


def test_bare_principals_exchange_local_messages(tmp_path):
    script = tmp_path / "pub.py"
    script.write_text(
        "from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2\n"
        "from awsiot.greengrasscoreipc.model import PublishMessage, BinaryMessage\n"
        "c = GreengrassCoreIPCClientV2()\n"
        "c.publish_to_topic(topic='test/bare', publish_message=PublishMessage("
        "binary_message=BinaryMessage(message=b'from-child')))\n")
    policy = {"accessControl": {"aws.greengrass.ipc.pubsub": {"p": {
        "operations": ["aws.greengrass#PublishToTopic"], "resources": ["test/bare"]}}}}
    with LocalCore(tmp_path / "gg") as core:
        cap = core.capture_local("test/bare")
        env = core.add_component("test.Bare", policy)
        proc = core.spawn("test.Bare", [sys.executable, str(script)], env=env)
        assert proc.wait(60) == 0, core.log_text("test.Bare")
        cap.wait_for(lambda m: m, 30)
        assert cap[0] == ("test/bare", b"from-child", "test.Bare")


def test_teardown_after_failure_leaves_no_process(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with LocalCore(tmp_path / "gg") as core:
            status = core.capture_local("test/echo/status")
            core.deploy(RECIPES, ARTIFACTS, ECHO, update_config=PYTHON)
            pid = _ready(status)[0]["pid"]
            raise RuntimeError("boom")
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    assert not (tmp_path / "gg" / "ipc.socket").exists()
    assert shutil.which("sh")


def test_startup_step_running_over_ipc(tmp_path):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    doc = yaml.safe_load((RECIPES / "test.Echo-1.0.0.yaml").read_text())
    lifecycle = doc["Manifests"][0]["Lifecycle"]
    lifecycle["Startup"] = lifecycle.pop("Run")  # a long-running Startup that reports RUNNING itself
    (recipes / "test.Echo-1.0.0.yaml").write_text(yaml.safe_dump(doc))
    with LocalCore(tmp_path / "gg") as core:
        status = core.capture_local("test/echo/status")
        core.deploy(recipes, ARTIFACTS, ECHO, update_config=PYTHON)
        _ready(status)
        states = [e["state"] for e in core.events("state") if e["component"] == "test.Echo"]
        assert states[:3] == ["INSTALLED", "STARTING", "RUNNING"]
        work = core.work_dir("test.Echo")
    lines = (work / "events.log").read_text().splitlines()
    assert lines.index("shutdown-step") < lines.index("sigterm")


def test_big_log_is_rotated_at_deployment(tmp_path):
    from ggdefender.local.nucleus.lifecycle import MAX_LOG_BYTES

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    _shell_recipe(recipes, "test.Chatty", {"Run": "echo fresh"})
    logs = tmp_path / "gg" / "logs"
    logs.mkdir(parents=True)
    (logs / "test.Chatty.log").write_bytes(b"x" * (MAX_LOG_BYTES + 1))
    with LocalCore(tmp_path / "gg") as core:
        core.deploy(recipes, None, {"test.Chatty": "1.0.0"})
        core.wait_for_state("test.Chatty", "FINISHED")
        core.wait_for_log("test.Chatty", "fresh")
    assert (logs / "test.Chatty.log.1").stat().st_size == MAX_LOG_BYTES + 1
    assert (logs / "test.Chatty.log").stat().st_size < 10_000
