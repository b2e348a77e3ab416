"""Supervisor pieces: backoff, settings, privilege-drop checks, restart of a crashing child."""

import os
import sys
import threading

import pytest

from ggdefender import process_start, settings
from ggdefender.collector import process as collector_process
from ggdefender.supervisor import collector_user, section, work_lock
from ggdefender.supervisor.section import SupervisorSettings
from ggdefender.supervisor import run as supervisor
from ggdefender.settings import ConfigError


def test_backoff_doubles_caps_and_resets_after_a_healthy_run():
    b = supervisor.Backoff(1, 8, 300)
    assert [b.delay(0.1) for _ in range(6)] == [1, 2, 4, 8, 8, 8]
    assert b.delay(301) == 1 and b.delay(2) == 2


def test_settings_defaults_strings_and_errors():
    assert section.parse_settings(None) == SupervisorSettings()
    st = section.parse_settings({"RestartInitialBackoffSeconds": "0.5", "RestartMaxBackoffSeconds": 30.0,
                            "CollectorUser": "", "LogLevel": "debug"})
    assert st.restart_initial_backoff == 0.5 and st.restart_max_backoff == 30 and st.log_level == "DEBUG"
    with pytest.raises(ConfigError) as e:
        section.parse_settings({"RestartInitialBackoffSeconds": "x", "StopTimeoutSeconds": 0})
    assert "RestartInitialBackoffSeconds" in str(e.value) and "StopTimeoutSeconds" in str(e.value)
    with pytest.raises(ConfigError, match="below RestartInitialBackoffSeconds"):
        section.parse_settings({"RestartInitialBackoffSeconds": 10, "RestartMaxBackoffSeconds": 5})
    st = section.parse_settings({"IpcRetryBudgetSeconds": "30", "CollectorMemoryLimitMiB": "48"})
    assert st.ipc_retry_budget == 30 and st.collector_memory_limit_mib == 48
    with pytest.raises(ConfigError) as e:
        section.parse_settings({"IpcRetryBudgetSeconds": "1", "CollectorMemoryLimitMiB": "8"})
    assert "IpcRetryBudgetSeconds" in str(e.value) and "CollectorMemoryLimitMiB" in str(e.value)


def test_code_defaults_are_the_built_in_defaults():
    from ggdefender import defaults

    assert section.parse_settings(defaults.DEFAULTS["Supervisor"]) == SupervisorSettings()


def test_one_supervisor_per_work_folder(tmp_path):
    held = work_lock.lock_work_folder(str(tmp_path))
    try:
        with pytest.raises(work_lock.WorkFolderBusy, match=rf"another ggdefender supervisor \(pid {os.getpid()},"):
            work_lock.lock_work_folder(str(tmp_path))
    finally:
        held.close()
    work_lock.lock_work_folder(str(tmp_path)).close()  # released with its holder


def test_collector_refuses_to_start_when_its_supervisor_is_already_gone():
    assert collector_process.die_with_supervisor({}) is None  # run alone: nothing to die with
    assert collector_process.die_with_supervisor({process_start.SUPERVISOR_PID_ENV: str(os.getppid())}) is None
    # a parent other than the one that started us: it died and we were re-parented before prctl ran
    assert "already gone" in collector_process.die_with_supervisor(
        {process_start.SUPERVISOR_PID_ENV: str(os.getppid() + 100000)})


def test_user_can_read_follows_permission_bits(tmp_path):
    import shutil
    import tempfile
    from pathlib import Path

    base = Path(tempfile.mkdtemp(prefix="ggd-perm-", dir="/tmp"))  # pytest's tmp root is 0700
    try:
        d = base / "d"
        d.mkdir()
        f = d / "f"
        f.write_text("x")
        os.chmod(base, 0o755)
        os.chmod(d, 0o755)
        os.chmod(f, 0o644)
        other = 54321
        assert collector_user.user_can_read(str(f), other, set())
        os.chmod(f, 0o640)
        assert not collector_user.user_can_read(str(f), other, set())
        assert collector_user.user_can_read(str(f), other, {os.stat(f).st_gid})  # group read
        os.chmod(f, 0o644)
        os.chmod(d, 0o700)
        assert not collector_user.user_can_read(str(f), other, set())
        assert collector_user.user_can_read(str(f), os.stat(d).st_uid, set())
        assert not collector_user.user_can_read(str(tmp_path), other, set())
        os.chmod(d, 0o711)  # an import folder must be listable too, not only enterable
        assert not collector_user.user_can_read(str(d), other, set())
        assert collector_user.user_can_read(str(f), other, set())
    finally:
        shutil.rmtree(base)


@pytest.mark.skipif(os.geteuid() != 0, reason="privilege drop only happens as root")
def test_collector_user_rules_as_root(tmp_path):
    with pytest.raises(ConfigError, match="no such user"):
        collector_user.resolve_collector_user(SupervisorSettings(collector_user="no-such-user-xyz"), str(tmp_path))
    with pytest.raises(ConfigError, match="refusing to run the collector as root"):
        collector_user.resolve_collector_user(SupervisorSettings(collector_user="root"), str(tmp_path))
    uid, gid, name, _ = collector_user.resolve_collector_user(SupervisorSettings(), str(tmp_path))  # root-owned dir
    assert name == "nobody" and uid != 0
    os.chown(tmp_path, 4242, 4242)
    if uid != 4242:
        try:
            import pwd
            pwd.getpwuid(4242)
        except KeyError:
            with pytest.raises(ConfigError):
                collector_user.resolve_collector_user(SupervisorSettings(), str(tmp_path))


def test_non_root_keeps_its_user(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert collector_user.resolve_collector_user(SupervisorSettings(collector_user="nobody"), str(tmp_path)) is None


def test_crashing_child_is_restarted_with_backoff_and_stopped_cleanly(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # no privilege drop in this test
    marker = tmp_path / "starts"
    script = f"open({str(marker)!r}, 'a').write('x'); raise SystemExit(3)"
    cfg = SupervisorSettings(restart_initial_backoff=0.1, restart_max_backoff=0.2)
    sup = supervisor.Supervisor(cfg, str(tmp_path), argv=[sys.executable, "-c", script])
    t = threading.Thread(target=sup.supervise_child)
    t.start()
    try:
        deadline_reached = threading.Event()
        for _ in range(600):
            if marker.exists() and len(marker.read_text()) >= 3:
                break
            deadline_reached.wait(0.1)
    finally:
        sup.stop.set()
        t.join(30)
    assert len(marker.read_text()) >= 3 and not t.is_alive()
    assert (tmp_path / supervisor.PART_STATE_SUBDIR).is_dir()


def test_stop_terminates_a_running_child(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    ready = tmp_path / "ready"
    script = (f"import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); "
              f"open({str(ready)!r}, 'w').close(); time.sleep(600)")
    sup = supervisor.Supervisor(SupervisorSettings(), str(tmp_path), argv=[sys.executable, "-c", script])
    t = threading.Thread(target=sup.supervise_child)
    t.start()
    try:
        waiter = threading.Event()
        for _ in range(600):
            if ready.exists():
                break
            waiter.wait(0.1)
        child = sup.child
    finally:
        sup.stop.set()
        t.join(30)
    assert not t.is_alive() and child is not None and child.returncode == 0 and sup.starts == 1


def test_relative_socket_path_stays_usable_from_the_collector_folder(tmp_path, monkeypatch):
    # a root so deep that the nucleus hands out ../../ipc.socket (absolute path >= 108 bytes)
    root = tmp_path / ("r" * max(1, 110 - len(str(tmp_path))))
    work = root / "work" / "ggdefender.Defender"
    collector = work / "collector"
    collector.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", "../../ipc.socket")
    sup = supervisor.Supervisor(SupervisorSettings(), str(work))
    env = sup._child_env(str(collector), None, str(collector))
    value = env["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"]
    assert value == "../../../ipc.socket"
    assert os.path.normpath(collector / value) == str(root / "ipc.socket")
    # B in A's folder: the path A got is still right
    assert sup._child_env(str(collector), None)["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"] == (
        "../../ipc.socket")


@pytest.mark.skipif(os.geteuid() != 0, reason="privilege drop only happens as root")
def test_privilege_separation_off_is_an_error_and_in_the_health_document(tmp_path, caplog):
    import shutil
    import tempfile
    from pathlib import Path

    from ggdefender import health

    private = Path(tempfile.mkdtemp(prefix="ggd-private-", dir="/tmp"))  # 0700: nobody cannot enter
    try:
        exe = private / "collector"
        exe.write_text("#!/bin/sh\nexit 0\n")
        exe.chmod(0o700)
        work = tmp_path / "work"
        work.mkdir()
        sup = supervisor.Supervisor(SupervisorSettings(), str(work), argv=[str(exe)])
        child = sup.start_child()
        child.wait(30)
        assert any(r.levelname == "ERROR" and "privilege separation OFF" in r.getMessage() for r in caplog.records)
        doc = health.process_health().get("privilegeSeparation")
        assert doc["on"] is False and doc["root"] is True and str(exe) in doc["reason"]
        assert health.process_health().get("parts.collector")["state"] == "running"
    finally:
        shutil.rmtree(private)


@pytest.mark.skipif(os.geteuid() != 0, reason="privilege drop only happens as root")
def test_a_work_folder_the_collector_user_cannot_enter_is_named_not_a_silent_failure(caplog):
    import shutil
    import tempfile
    from pathlib import Path

    from ggdefender import health

    private = Path(tempfile.mkdtemp(prefix="ggd-private-", dir="/tmp"))  # 0700: nobody cannot enter
    try:
        work = private / "work"
        work.mkdir()
        exe = "/usr/bin/true" if os.path.exists("/usr/bin/true") else "/bin/true"
        sup = supervisor.Supervisor(SupervisorSettings(), str(work), argv=[exe])
        sup.start_child().wait(30)
        doc = health.process_health().get("privilegeSeparation")
        assert doc["on"] is False and str(work) in doc["reason"]
        with pytest.raises(settings.ConfigError, match="cannot read"):  # a configured user is never overridden
            supervisor.Supervisor(SupervisorSettings(collector_user="nobody"), str(work), argv=[exe]).start_child()
    finally:
        shutil.rmtree(private)


def test_collector_over_its_memory_limit_is_ended_and_restarted(tmp_path, monkeypatch, caplog):
    from ggdefender import health

    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # no privilege drop in this test
    monkeypatch.setattr(supervisor, "MEMORY_CHECK_SECONDS", 0.2)
    script = "import time; hoard = b'x' * (40 << 20); time.sleep(600)"  # 40 MiB resident, over a 16 MiB limit
    cfg = SupervisorSettings(restart_initial_backoff=0.1, restart_max_backoff=0.2, collector_memory_limit_mib=16)
    sup = supervisor.Supervisor(cfg, str(tmp_path), argv=[sys.executable, "-c", script])
    t = threading.Thread(target=sup.supervise_child)
    t.start()
    try:
        for _ in range(600):
            if sup.starts >= 2:
                break
            threading.Event().wait(0.1)
    finally:
        sup.stop.set()
        t.join(30)
    assert sup.starts >= 2 and not t.is_alive()
    assert any(r.levelname == "ERROR" and "collector exceeded its memory limit" in r.getMessage()
               and "> 16 MiB" in r.getMessage() for r in caplog.records)
    part = health.process_health().get("parts.collector")
    assert part["state"] == "stopped" and part["restarts"] >= 1 and "memory limit" in part["cause"]
