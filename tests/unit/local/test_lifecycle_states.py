"""The pure lifecycle state machine of `ggdefender local`: event sequences in, states and actions out."""

import ast
from pathlib import Path

import pytest

from ggdefender.local.nucleus import lifecycle_states as ls
from ggdefender.local.nucleus.lifecycle_states import (
    HALT, KILL_IN_FLIGHT, MAX_ERRORS, RETRY, ComponentLifecycle, Fail, KillProcess, RunStep, SetState, Sleep,
    Spawn)


def machine(*steps, **kw):
    return ComponentLifecycle(frozenset(steps), **kw)


@pytest.mark.parametrize("steps, install, installed, expected", [
    (("Install", "Run"), True, False, RunStep("Install")),
    ((), True, False, RunStep("Install")),  # no Install step: still INSTALLED, as on a real core
    (("Install", "Run"), True, True, Spawn("Run")),
    (("Install", "Run"), False, False, Spawn("Run")),  # a restart never re-runs Install
    (("Run", "Startup"), False, True, Spawn("Run")),  # Run wins over Startup
    (("Startup",), False, True, Spawn("Startup")),
    (("Install", "Shutdown"), False, True, SetState("FINISHED")),  # nothing to run
])
def test_the_next_step_follows_the_step_order(steps, install, installed, expected):
    m = machine(*steps, installed=installed)
    assert m.next_step(install) == expected


@pytest.mark.parametrize("flag", ["stopping", "closed"])
def test_a_stopping_or_closing_component_starts_nothing(flag):
    m = machine("Install", "Run", **{flag: True})
    assert m.next_step(True) == HALT
    assert m.failed("boom") == [HALT] and m.errors == 0
    assert m.run_exited(1, current=True) == HALT
    assert not m.may_retry()


def test_install_done_is_remembered_and_reported():
    m = machine("Install", "Run")
    assert m.install_done() == [SetState("INSTALLED")]
    assert m.next_step(True) == Spawn("Run")


@pytest.mark.parametrize("call, expected", [
    (lambda m: m.run_spawned(skipped=True), [SetState("FINISHED")]),  # skipif on Run: FINISHED
    (lambda m: m.run_spawned(skipped=False), [SetState("RUNNING")]),
    (lambda m: m.startup_skipped(), [SetState("RUNNING")]),  # skipif on Startup: RUNNING
    (lambda m: m.startup_begins(), [SetState("STARTING")]),
    (lambda m: m.startup_exited(0), [SetState("RUNNING")]),
    (lambda m: m.startup_exited(3), [Fail("Startup exited with code 3")]),
    (lambda m: m.run_exited(0, current=True), SetState("FINISHED")),
    (lambda m: m.run_exited(2, current=True), Fail("Run exited with code 2")),
    (lambda m: m.run_exited(2, current=False), HALT),  # an old process (restarted since): ignored
])
def test_step_outcomes(call, expected):
    assert call(machine("Run", "Startup")) == expected


def test_three_errors_make_the_component_broken_with_recover_each_time():
    m = machine("Run", "Recover", retry_delay=0.5)
    seen = [m.failed("Run exited with code 1") for _ in range(MAX_ERRORS)]
    assert seen[0] == [SetState("ERRORED", "Run exited with code 1 (error 1 of 3)"),
                       RunStep("Recover", warn="Recover failed"), Sleep(0.5), RETRY]
    assert seen[1] == [SetState("ERRORED", "Run exited with code 1 (error 2 of 3)"),
                       RunStep("Recover", warn="Recover failed"), Sleep(1.0), RETRY]  # the delay grows
    assert seen[2] == [SetState("ERRORED", "Run exited with code 1 (error 3 of 3)"),
                       RunStep("Recover", warn="Recover failed"),
                       SetState("BROKEN", "3 errors: Run exited with code 1; fix it and deploy again"), HALT]


def test_without_a_recover_step_there_is_none_to_run():
    assert machine("Run").failed("x") == [SetState("ERRORED", "x (error 1 of 3)"), Sleep(1.0), RETRY]


def test_a_stop_during_the_retry_delay_cancels_the_retry():
    m = machine("Run")
    assert m.failed("x")[-1] == RETRY
    m.stop_requested(in_flight=False, in_flight_reported_running=False)
    assert not m.may_retry()


@pytest.mark.parametrize("stopping, reported, now, expected", [
    (False, "STARTING", 10.0, ls.WAIT),
    (False, "RUNNING", 10.0, ls.RUNNING),
    (False, "RUNNING", 999.0, ls.RUNNING),  # reported in time, seen late: still RUNNING
    (False, "STARTING", 130.1, ls.TIMED_OUT),
    (True, "RUNNING", 999.0, ls.STOPPED),  # a stop wins over everything
])
def test_startup_progress(stopping, reported, now, expected):
    m = machine("Startup", stopping=stopping)
    deadline = m.startup_deadline(10.0, None)
    assert deadline == 10.0 + ls.STARTUP_TIMEOUT
    assert m.startup_progress(reported=reported, now=now, deadline=deadline) == expected


def test_startup_deadline_uses_the_step_timeout():
    assert machine("Startup").startup_deadline(5.0, 2.5) == 7.5


@pytest.mark.parametrize("step, timeout, startup, text", [
    ("Install", 2, False, "Install timed out after 2 s"),
    ("Recover", 0.5, False, "Recover timed out after 0.5 s"),
    ("Startup", 3, True, "Startup timed out after 3 s without reporting RUNNING"),
])
def test_timeout_reasons(step, timeout, startup, text):
    assert ComponentLifecycle.step_timed_out(step, timeout, startup=startup) == text


def test_exit_reasons():
    assert ComponentLifecycle.step_exited("Install", 0) is None
    assert ComponentLifecycle.step_exited("Install", 4) == "Install exited with code 4"


@pytest.mark.parametrize("in_flight, reported_running, expected", [
    (True, False, [KILL_IN_FLIGHT]),  # stop during Install (or a Startup not yet RUNNING): end it first
    (True, True, []),  # a Startup that reported RUNNING is the component's process: Shutdown first
    (False, False, []),
])
def test_stop_requested(in_flight, reported_running, expected):
    m = machine("Install", "Run")
    assert m.stop_requested(in_flight, reported_running) == expected
    assert m.stopping and m.next_step(True) == HALT


@pytest.mark.parametrize("state, has_process, expected", [
    ("NEW", False, [HALT]),
    ("BROKEN", False, [HALT]),
    ("FINISHED", False, [HALT]),
    ("FINISHED", True, None),
    ("RUNNING", True, None),
    ("INSTALLED", False, None),
])
def test_stop_runs_shutdown_unless_nothing_runs(state, has_process, expected):
    full = [SetState("STOPPING"), RunStep("Shutdown", warn="Shutdown step failed"), KillProcess(final=True),
            SetState("FINISHED")]
    assert ComponentLifecycle.stop(state, has_process) == (expected or full)


def test_restart_clears_the_stop_and_the_error_count_but_not_install():
    m = machine("Install", "Run")
    m.install_done()
    m.failed("x")
    m.failed("x")
    m.stop_requested(False, False)
    m.restarted()
    assert (m.errors, m.stopping, m.installed) == (0, False, True)
    assert m.next_step(False) == Spawn("Run")
    assert m.failed("y")[0] == SetState("ERRORED", "y (error 1 of 3)")


@pytest.mark.parametrize("stopping, state, expected", [
    (False, "ERRORED", [KillProcess(), Fail("the component reported ERRORED (UpdateState)")]),
    (False, "RUNNING", [HALT]),  # recovered before we got to it
    (True, "ERRORED", [HALT]),
])
def test_reported_errored(stopping, state, expected):
    assert machine("Run", stopping=stopping).reported_errored(state) == expected


def test_a_broken_hard_dependency_breaks_the_component_a_soft_one_does_not():
    m = machine("Run")
    assert m.dependency_broken("a.B", hard=True) == [SetState("BROKEN", "hard dependency a.B is BROKEN"), HALT]
    assert m.dependency_broken("a.B", hard=False) == []


def test_the_machine_does_no_io():
    """Pure: no processes, threads, clocks, files or sockets imported."""
    tree = ast.parse(Path(ls.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "dataclasses", "typing"}, imported


def test_every_action_the_machine_emits_has_a_driver():
    """lifecycle.py handles each action class and each argument-less action the machine declares."""
    driver = Path(ls.__file__).with_name("lifecycle.py").read_text()
    actions = [name for name, obj in vars(ls).items()
               if (isinstance(obj, type) and obj.__module__ == ls.__name__
                   and name not in ("ComponentLifecycle", "Signal")) or isinstance(obj, ls.Signal)]
    assert {"HALT", "RETRY", "KILL_IN_FLIGHT", "Spawn", "SetState"} <= set(actions)
    for name in actions:
        assert f"ls.{name}" in driver, f"{name} is never handled by the driver"
