"""stop-listener against real processes: a pre-fork server (parent + 2 workers sharing one socket) plus a
separate IPv6 listener on the same port; every owner is found, vetted before any is touched, and stopped."""

import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from ggdefender.remediation import config, documents
from ggdefender.remediation.executor import Executor
from ggdefender.remediation.operations import socket_owners
from ggdefender.remediation.safety import SafetyPolicy

OURS = "ggdefender.remediation/1"

# binds, listens, forks 2 workers that inherit the socket, prints every pid, then all sleep
PREFORK = r"""
import os, socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(8)
pids = [os.getpid()]
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        time.sleep(600); os._exit(0)
    pids.append(pid)
print(s.getsockname()[1], *pids, flush=True)
time.sleep(600)
"""

V6 = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
s.bind(("::1", int(sys.argv[1]))); s.listen(8)
print("ready", flush=True)
time.sleep(600)
"""


@pytest.fixture
def servers():
    """(port, [4 pids]) of a real pre-fork server and an IPv6 listener on the same port."""
    parent = subprocess.Popen([sys.executable, "-c", PREFORK], stdout=subprocess.PIPE, text=True)
    port, *pids = map(int, parent.stdout.readline().split())
    v6 = subprocess.Popen([sys.executable, "-c", V6, str(port)], stdout=subprocess.PIPE, text=True)
    assert v6.stdout.readline().strip() == "ready"
    all_pids = pids + [v6.pid]
    yield port, all_pids
    for pid in all_pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for proc in (parent, v6):
        proc.wait(5)


@pytest.fixture(scope="module")
def component():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    proc.kill()
    proc.wait(5)


def _run(port, component, **settings_keys):
    settings = config.parse(settings_keys)
    audit = []
    ex = Executor(settings, SafetyPolicy(settings, own_pid=component.pid), audit_sink=audit.append)
    plan = documents.parse({"schema": OURS, "steps": [
        {"operation": "stop-listener", "arguments": {"port": port, "gracePeriodSeconds": 2}}]}, settings)
    return ex.execute(plan, "stop"), audit


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_every_owner_of_every_socket_is_found(servers):
    port, pids = servers
    held, unowned = socket_owners.owners(socket_owners.listening_inodes(port, "tcp"))
    assert set(held) == set(pids) and not unowned
    assert len(socket_owners.listening_inodes(port, "tcp")) == 2  # one IPv4 and one IPv6 socket
    assert socket_owners.listening_inodes(port, "tcp", "::1") != socket_owners.listening_inodes(port, "tcp",
                                                                                                "127.0.0.1")


def test_stop_listener_ends_all_four_owners_and_verifies_the_port(servers, component):
    port, pids = servers
    result, audit = _run(port, component)
    assert result.status == "SUCCEEDED", result.details
    assert result.details["portClosed"] == "true"
    for pid in pids:
        assert str(pid) in result.details["pids"]
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)
    assert not socket_owners.listening_inodes(port, "tcp")
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family) as s:
            assert s.connect_ex((host, port)) != 0


def test_one_protected_owner_means_no_owner_is_touched(servers, component):
    port, pids = servers
    worker = pids[2]
    result, audit = _run(port, component, ProtectedPids=[worker])
    assert result.status == "REJECTED"
    assert f"pid {worker}" in result.details["reason"] and "no owner was signalled" in result.details["reason"]
    assert audit[-1]["result"] == "REJECTED"
    time.sleep(0.5)  # a signal, had one been sent, would have been delivered by now
    assert all(_alive(p) for p in pids)
    assert len(socket_owners.listening_inodes(port, "tcp")) == 2


def test_udp_socket_shared_with_a_forked_child_has_both_owners():
    code = ("import os, socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.bind(('127.0.0.1', 0))\npid = os.fork()\nif pid == 0:\n    time.sleep(600); os._exit(0)\n"
            "print(s.getsockname()[1], os.getpid(), pid, flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    port, *pids = map(int, proc.stdout.readline().split())
    try:
        held, unowned = socket_owners.owners(socket_owners.listening_inodes(port, "udp"))
        assert set(held) == set(pids) and not unowned
        assert not socket_owners.listening_inodes(port, "tcp")
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        proc.wait(5)
