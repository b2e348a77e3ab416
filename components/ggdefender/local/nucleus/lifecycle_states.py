"""The lifecycle of one component as a pure state machine: events in, actions out.

No processes, threads, clocks or files here (the driver, lifecycle.py, spawns the steps, waits, reads the
clock and feeds what happened back in), so every rule of the lifecycle -- step order, skipped steps, three
errors to BROKEN, Startup's deadline, what stopping does -- is decided in one place and tested as tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

MAX_ERRORS = 3  # three ERRORED states without recovery make a component BROKEN, as on a real core
STARTUP_TIMEOUT = 120.0  # seconds a Startup without a Timeout has to report RUNNING, as on a real core
TERMINAL = ("NEW", "BROKEN", "FINISHED")  # nothing runs in these: stopping needs no Shutdown step


# -- actions: what the driver does next ---------------------------------------------------------------

@dataclass(frozen=True)
class SetState:
    state: str
    reason: str = ""


@dataclass(frozen=True)
class RunStep:
    """Run a step to its end (Install, Recover, Shutdown); with `warn`, a failure is only noted (after that
    text), not an error of the component."""

    step: str
    warn: str = ""


@dataclass(frozen=True)
class Spawn:
    """Start Run (and watch it) or Startup (and wait for it to report RUNNING, exit, or pass its deadline)."""

    step: str


@dataclass(frozen=True)
class Fail:
    """The component failed: hand `reason` to `ComponentLifecycle.failed` (while holding the component)."""

    reason: str


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Signal:
    """An action without arguments: one of the constants below."""

    name: str


HALT = Signal("halt")  # nothing more to do in this attempt (stopping, closed, done or BROKEN)
RETRY = Signal("retry")  # start again without Install
KILL_IN_FLIGHT = Signal("kill in flight")  # end the Install, or the Startup not yet RUNNING, holding the component


@dataclass(frozen=True)
class KillProcess:
    """End Run/Startup's process group (SIGTERM, SIGKILL after the grace period); `final`: the component is
    stopping, so its exit code is logged and its watcher cancelled."""

    final: bool = False


# Startup's progress, one answer per look at it
WAIT, RUNNING, STOPPED, TIMED_OUT = "wait", "running", "stopped", "timed out"


@dataclass
class ComponentLifecycle:
    """One deployed component's lifecycle bookkeeping; each method is one event and returns the actions."""

    steps: frozenset  # the lifecycle steps its recipe has
    retry_delay: float = 1.0
    installed: bool = False
    errors: int = 0
    stopping: bool = False
    closed: bool = False  # the whole core is shutting down

    @property
    def halted(self) -> bool:
        return self.stopping or self.closed

    def next_step(self, install: bool) -> object:
        """Start (or go on starting): the next thing to do."""
        if self.halted:
            return HALT
        if install and not self.installed:
            return RunStep("Install")
        if "Run" in self.steps:
            return Spawn("Run")
        if "Startup" in self.steps:
            return Spawn("Startup")
        return SetState("FINISHED")

    def install_done(self) -> list:
        self.installed = True
        return [SetState("INSTALLED")]

    @staticmethod
    def run_spawned(skipped: bool) -> list:
        return [SetState("FINISHED")] if skipped else [SetState("RUNNING")]

    @staticmethod
    def startup_begins() -> list:
        return [SetState("STARTING")]

    @staticmethod
    def startup_skipped() -> list:
        return [SetState("RUNNING")]

    def startup_deadline(self, now: float, timeout: Optional[float]) -> float:
        return now + (timeout or STARTUP_TIMEOUT)

    def startup_progress(self, *, reported: str, now: float, deadline: float) -> str:
        """One look at a Startup still alive: the order matters (a stop wins, then RUNNING, then the clock)."""
        if self.stopping:
            return STOPPED
        if reported == "RUNNING":  # reported over IPC UpdateState
            return RUNNING
        if now > deadline:
            return TIMED_OUT
        return WAIT

    @staticmethod
    def startup_exited(code: int) -> list:
        """Startup ended before reporting RUNNING: exit code 0 counts as RUNNING, anything else fails."""
        return [Fail(f"Startup exited with code {code}")] if code != 0 else [SetState("RUNNING")]

    @staticmethod
    def step_exited(step: str, code: int) -> Optional[str]:
        return f"{step} exited with code {code}" if code != 0 else None

    @staticmethod
    def step_timed_out(step: str, timeout: float, startup: bool = False) -> str:
        if startup:
            return f"Startup timed out after {timeout:g} s without reporting RUNNING"
        return f"{step} timed out after {timeout:g} s"

    def failed(self, reason: str) -> list:
        """A step failed or the component reported ERRORED: ERRORED, Recover, then BROKEN or a delayed retry."""
        if self.halted:
            return [HALT]
        self.errors += 1
        actions: list = [SetState("ERRORED", f"{reason} (error {self.errors} of {MAX_ERRORS})")]
        if "Recover" in self.steps:
            actions.append(RunStep("Recover", warn="Recover failed"))
        if self.errors >= MAX_ERRORS:
            actions += [SetState("BROKEN", f"{MAX_ERRORS} errors: {reason}; fix it and deploy again"), HALT]
        else:
            actions += [Sleep(self.retry_delay * self.errors), RETRY]
        return actions

    def may_retry(self) -> bool:
        """After the retry delay: a stop in the meantime wins."""
        return not self.halted

    def run_exited(self, code: int, current: bool) -> object:
        """Run (or a Startup that reported RUNNING) exited; `current`: it is still the component's process."""
        if self.halted or not current:
            return HALT
        if code == 0:
            return SetState("FINISHED")
        return Fail(f"Run exited with code {code}")

    def reported_errored(self, state: str) -> list:
        """The component set ERRORED itself over IPC: end its process, then handle it as a failed step."""
        if self.stopping or state != "ERRORED":
            return [HALT]
        return [KillProcess(), Fail("the component reported ERRORED (UpdateState)")]

    def stop_requested(self, in_flight: bool, in_flight_reported_running: bool) -> list:
        self.stopping = True
        return [KILL_IN_FLIGHT] if in_flight and not in_flight_reported_running else []

    @staticmethod
    def stop(state: str, has_process: bool) -> list:
        """Holding the component: Shutdown, end Run/Startup, FINISHED -- unless nothing runs."""
        if state in TERMINAL and not has_process:
            return [HALT]
        return [SetState("STOPPING"), RunStep("Shutdown", warn="Shutdown step failed"), KillProcess(final=True),
                SetState("FINISHED")]

    def restarted(self) -> None:
        """After a stop for RestartComponent: a fresh error count, start again without Install."""
        self.stopping = False
        self.errors = 0

    def dependency_broken(self, dependency: str, hard: bool) -> list:
        return [SetState("BROKEN", f"hard dependency {dependency} is BROKEN"), HALT] if hard else []
