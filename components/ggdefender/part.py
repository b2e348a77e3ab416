"""The part contract and the one host per process that runs parts through it.

Every part (collector, plugin host, detect in process B; the remediation listener in process A) reads one
configuration section and has the same shape: `reconfigure(section)` validates the whole section and swaps it
in, or raises `settings.ConfigError` having changed nothing; `start()` begins its work; `close()` ends it and
saves what must survive. The host is the only code that decides which section goes to which part, in which
order parts start and close, and what goes into the health document about each part's configuration
(config_store.LastGood: a rejected section keeps the last good one, also across restarts).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Protocol, runtime_checkable

from ggdefender import health
from ggdefender.config_store import LastGood
from ggdefender.ipc import IpcUnavailable
from ggdefender.settings import ConfigError

if TYPE_CHECKING:
    from ggdefender.ipc_port import IpcPort

log = logging.getLogger("ggdefender.parts")


@runtime_checkable
class Part(Protocol):
    section: str  # the configuration section this part reads, e.g. "Detect"

    def reconfigure(self, section: Any) -> None:
        """Validate the whole section and swap it in; ConfigError (nothing changed) when it is invalid."""

    def start(self) -> None:
        """Begin work; called once, after the first reconfigure."""

    def close(self) -> None:
        """End work and persist what must survive a restart; called once, also after a failed start."""


class PartHost:
    """Runs `parts` (in start order) for one process: configuration dispatch, start, close, verdicts."""

    def __init__(self, ipc: Optional["IpcPort"], state_dir: Optional[str], parts: Iterable[Part], *,
                 notes: Optional[Dict[str, str]] = None):
        self.parts: List[Part] = list(parts)
        sections = [p.section for p in self.parts]
        if len(set(sections)) != len(sections):
            raise ValueError(f"two parts read the same configuration section: {sections}")
        self._notes = notes or {}
        self._state_dir = state_dir
        self._ipc = ipc
        self._last_good = {p.section: self._new_last_good(p.section) for p in self.parts}
        self._started: List[Part] = []
        self._closed = False
        self._lock = threading.RLock()  # the follow thread and a part's own thread may configure at once

    def __getitem__(self, section: str) -> Part:
        for part in self.parts:
            if part.section == section:
                return part
        raise KeyError(section)

    def _new_last_good(self, section: str) -> LastGood:
        return LastGood(self._ipc, section, self._state_dir, note=self._notes.get(section))

    def replace(self, part: Part) -> None:
        """A new instance of a part (restarted after a failure, or added): it runs no section yet, so a
        rejected one falls back to the saved last good section as at start-up."""
        self._last_good[part.section] = self._new_last_good(part.section)
        for i, old in enumerate(self.parts):
            if old.section == part.section:
                self.parts[i] = part
                return
        self.parts.append(part)

    def last_good(self, section: str) -> LastGood:
        return self._last_good[section]

    def configure(self, whole: Any) -> Dict[str, bool]:
        """Hand each part its section of the component configuration; {section: accepted}. A part that
        rejects its section (or fails applying it) keeps its last good one and the verdict goes to health;
        the other parts are configured all the same."""
        whole = whole if isinstance(whole, dict) else {}
        return {part.section: self.configure_part(part, whole.get(part.section)) for part in self.parts}

    def configure_part(self, part: Part, section: Any) -> bool:
        with self._lock:
            return self._adopt(part, section)

    def _adopt(self, part: Part, section: Any) -> bool:
        last_good = self._last_good[part.section]
        try:
            return last_good.adopt(section, part.reconfigure)
        except IpcUnavailable:  # not about the section: the process cannot go on (its caller decides)
            raise
        except Exception as exc:  # a bug in one part must not stop the others; said as a rejection
            log.exception("%s configuration could not be applied", part.section)
            reason = f"{type(exc).__name__}: {exc}"
            last_good.error = reason
            health.configuration(self._ipc, part.section, False, reason, using_last_good=last_good.in_use)
            return False

    def follow(self, ipc: "IpcPort") -> "Following":
        """Re-read and dispatch each changed section from now on, on one thread of the host's (IPC callbacks
        only signal it), for a process whose parts do not re-read the configuration on a loop of their own.
        Close the result to stop."""
        return Following(self, ipc)

    def start(self) -> None:
        """Start every part in order; when one cannot start, those already started are closed (reverse order)
        and the error is raised: a process with a part missing is not healthy."""
        for part in self.parts:
            if part in self._started:
                continue
            try:
                part.start()
            except BaseException:
                self.close()
                raise
            self._started.append(part)

    def close(self) -> None:
        """Close every part, in reverse start order (a part not started is closed too: it may hold state from
        its configuration); one failing close is logged and the rest still close. Only the first call acts."""
        if self._closed:
            return
        self._closed = True
        for part in reversed(self.parts):
            try:
                part.close()
            except Exception:
                log.exception("closing %s failed", part.section)


class Following:
    """PartHost.follow: one configuration subscription and the thread that dispatches what changed."""

    def __init__(self, host: PartHost, ipc: "IpcPort"):
        self._host, self._ipc = host, ipc
        self._changed: set = set()  # sections changed since the last dispatch; None: the whole configuration
        self._closed = False
        self._wake = threading.Condition()
        self._sub = ipc.subscribe_config(self._on_change)
        threading.Thread(target=self._dispatch, name="part-config", daemon=True).start()

    def _on_change(self, path: list) -> None:
        with self._wake:
            self._changed.add(path[0] if path else None)
            self._wake.notify()

    def _dispatch(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: bool(self._changed) or self._closed)
                if self._closed:
                    return
                names, self._changed = self._changed, set()
            for part in list(self._host.parts):
                if None in names or part.section in names:
                    try:
                        self._host.configure_part(part, self._ipc.get_config([part.section]))
                    except Exception as exc:  # IPC trouble: the next change tries again
                        log.warning("could not read the %s configuration: %s", part.section, exc)

    def close(self) -> None:
        try:
            self._sub.close()
        finally:
            with self._wake:
                self._closed = True
                self._wake.notify()


__all__ = ["ConfigError", "Following", "Part", "PartHost"]
