"""Safety rules (protected processes, signals), configuration validation, and the bounded runner."""

import os
import sys

import pytest

from ggdefender.remediation import config, safety
from ggdefender.remediation.bounded_process import run_argv
from ggdefender.remediation.safety import ProcessInfo, protection_reason
from ggdefender.settings import ConfigError

NUCLEUS = ProcessInfo(pid=812, ppid=1, name="java", cmdline=(
    "java", "-Dlog.store=FILE", "-classpath", "/greengrass/v2/alts/current/distro/lib/Greengrass.jar",
    "com.aws.greengrass.easysetup.GreengrassSetup"))


@pytest.mark.parametrize("info, expected", [
    (ProcessInfo(pid=1, ppid=0, name="systemd"), "init"),
    (ProcessInfo(pid=2, ppid=0, name="kthreadd"), "kernel thread"),
    (ProcessInfo(pid=57, ppid=2, name="kworker/0:1"), "kernel thread"),
    (NUCLEUS, "Greengrass nucleus"),
    (ProcessInfo(pid=900, ppid=1, name="ggipcd"), "Greengrass nucleus"),
    (ProcessInfo(pid=901, ppid=1, name="ggl.core.ggconfigd"), "Greengrass nucleus"),
    (ProcessInfo(pid=4242, ppid=812, name="python3"), "this component"),
    (ProcessInfo(pid=5000, ppid=1, name="sshd", exe="/usr/sbin/sshd"), "ProtectedProcessNames"),
    (ProcessInfo(pid=6000, ppid=1, name="custom"), "ProtectedPids"),
])
def test_protected_processes(info, expected):
    reason = protection_reason(info, own_pids={4242}, protected_names=["sshd"], protected_pids=[6000])
    assert reason and expected in reason


def test_ordinary_process_is_not_protected():
    info = ProcessInfo(pid=7777, ppid=1, name="python3", cmdline=("python3", "-m", "http.server", "8888"))
    assert protection_reason(info, own_pids={4242}, protected_names=["sshd"]) is None


def test_live_policy_protects_this_process_and_its_parents():
    import psutil
    policy = safety.SafetyPolicy(config.parse({}))
    own = policy.own_pids()
    assert os.getpid() in own and os.getppid() in own
    assert "protected" in policy.refusal_for(psutil.Process(os.getpid()))


@pytest.mark.parametrize("name", ["SIGSTOP", "SIGCONT", "9", "KILL", "sigterm", "SIGRTMIN"])
def test_only_listed_signal_names(name):
    with pytest.raises(ValueError):
        safety.signal_from_name(name)


def test_operation_allow_list():
    policy = safety.SafetyPolicy(config.parse({"AllowedOperations": ["collect-now"]}))
    assert policy.operation_refusal("collect-now") is None
    assert "not in Remediation.AllowedOperations" in policy.operation_refusal("kill-process")


def test_config_accepts_strings_for_numbers_and_rejects_bad_values():
    s = config.parse({"HandlerTimeoutSeconds": "12", "ProtectedPids": "10, 11", "AllowRunCommand": "false"})
    assert s.handler_timeout_seconds == 12.0 and s.protected_pids == (10, 11)
    for bad, fragment in [
        ({"AllowedOperations": ["rm-rf"]}, "unknown operation"),
        ({"AllowRunCommand": True}, "RunCommandExecutables"),
        ({"RunCommandExecutables": ["systemctl"]}, "absolute"),
        ({"HandlerDirectory": "relative/dir"}, "absolute"),
        ({"SetConfigAllowedKeys": ["Remediation/AllowRunCommand"]}, "never be changed"),
        ({"HandlerUser": "root; id"}, "invalid user"),
        ({"MaxOutputBytes": "99999"}, "maximum"),
        ({"AllowedOprations": []}, "unknown key"),
        ({"FirewallTable": "x;y"}, "invalid table"),
    ]:
        with pytest.raises(ConfigError, match=fragment):
            config.parse(bad)


def test_runner_caps_output_of_both_pipes_without_deadlock():
    code = "import sys\nfor i in range(20000):\n    sys.stdout.write('o%d\\n' % i); sys.stderr.write('e%d\\n' % i)\n"
    res = run_argv([sys.executable, "-c", code], timeout=60, max_bytes=100)
    assert res.returncode == 0 and not res.timed_out and res.truncated
    assert len(res.stdout) <= 100 and res.stdout.endswith("o19999\n")
    assert res.stderr_lines == 20000


def test_runner_stops_the_process_group_on_timeout():
    res = run_argv([sys.executable, "-c", "import time; print('x', flush=True); time.sleep(60)"], timeout=0.5,
                   kill_grace=1)
    assert res.timed_out and res.returncode is None and res.stdout == "x\n"


def test_runner_never_uses_a_shell():
    res = run_argv(["/bin/echo", "$(id)", ";", "`id`"], timeout=10)
    assert res.stdout == "$(id) ; `id`\n"
