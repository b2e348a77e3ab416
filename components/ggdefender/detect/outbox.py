"""Detect's outbox: violation events, findings and mitigation requests not yet published, in order.

Failures are handled per item, so one poisoned item can never hold back the ones behind it:
- a *transient* failure (process A or Greengrass unreachable, no reply in time) keeps order and ends the flush:
  the same item is tried first on the next report;
- any other failure is the item's own (the relay or the core refuses it, it is too large or invalid): it is
  counted and the flush goes on with the next item; after MAX_TRIES such failures the item is dropped with an
  ERROR naming it.
A full outbox drops its oldest item, also with an ERROR. Drops are counted (`dropped`, `last_drop_reason`),
persisted with the alarm state, and reported in detect's status and the health document.
"""

from __future__ import annotations

import collections
import logging
from typing import Any, Callable, Iterator, Optional

from ggdefender.ipc import IpcUnavailable, PublishRefused
from ggdefender.health import now_iso
from ggdefender.ratelog import RateLimitedLog
from ggdefender.statefile import need

log = logging.getLogger("ggdefender.detect.outbox")

MAX_OUTBOX = 1000
MAX_TRIES = 3  # failures of one item (other than transient ones) before it is dropped
KINDS = ("violation", "finding", "request")
_unavailable = RateLimitedLog(log)


def is_transient(exc: BaseException) -> bool:
    """True when the failure says nothing about the item: the way to IoT Core is down or slow right now."""
    # TimeoutError covers the relay's RelayTimeout (process A did not answer in time); PublishRefused is a
    # nucleus that cannot reach IoT Core now (nucleus lite refuses instead of queueing)
    return isinstance(exc, (IpcUnavailable, TimeoutError, ConnectionError, PublishRefused))


def describe(kind: str, payload: Any) -> str:
    """A short name of an item for a log line: what it is and its id."""
    if isinstance(payload, dict):
        ident = payload.get("violationId") or payload.get("Id") or payload.get("requestId")
        event = payload.get("violationEventType")
        if ident:
            return f"{kind} {ident}" + (f" ({event})" if event else "")
    return kind


class Outbox:
    """Bounded FIFO of [kind, payload, failures]."""

    def __init__(self, maxlen: int = MAX_OUTBOX):
        self.maxlen = maxlen
        self._items: collections.deque = collections.deque()
        self.dropped = 0
        self.last_drop_reason: Optional[str] = None
        self.last_drop_at: Optional[str] = None  # ISO time: health counts a drop as a problem for a day

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[tuple]:
        return ((kind, payload) for kind, payload, _ in self._items)

    def append(self, item: tuple) -> None:
        """Queue (kind, payload) at the end (the deque-style call the service has always used)."""
        kind, payload = item
        if kind not in KINDS:
            raise ValueError(f"outbox: unknown kind {kind!r}")
        while len(self._items) >= self.maxlen:
            old = self._items.popleft()
            self._drop(old, f"outbox full ({self.maxlen} items): the oldest was dropped")
        self._items.append([kind, payload, 0])

    def _drop(self, item: list, reason: str) -> None:
        name = describe(item[0], item[1])
        self.dropped += 1
        self.last_drop_reason = f"{name}: {reason}"[:500]
        self.last_drop_at = now_iso()
        log.error("outbox: %s dropped (never published): %s", name, reason)

    def flush(self, publish: Callable[[str, Any], None]) -> tuple[int, bool]:
        """Publish in order with `publish(kind, payload)`; returns (published, changed) where `changed` says the
        outbox needs saving (items sent, failures counted or items dropped)."""
        sent, changed = 0, False
        keep: collections.deque = collections.deque()
        items, self._items = self._items, keep
        while items:
            item = items.popleft()
            kind, payload, _ = item
            try:
                publish(kind, payload)
            except Exception as exc:
                if is_transient(exc):
                    _unavailable.failed("flush", "outbox: publishing failed (%s); %d item(s) kept for the next "
                                        "report", exc, len(items) + 1)
                    keep.append(item)
                    keep.extend(items)
                    break
                item[2] += 1
                changed = True
                if item[2] >= MAX_TRIES:
                    self._drop(item, f"refused {item[2]} time(s), last: {type(exc).__name__}: {exc}")
                else:
                    log.warning("outbox: publishing %s refused (%s: %s); try %d of %d, later items go ahead",
                                describe(kind, payload), type(exc).__name__, exc, item[2], MAX_TRIES)
                    keep.append(item)
                continue
            sent += 1
            changed = True
        if sent:
            _unavailable.recovered("flush", "outbox: publishing works again")
        return sent, changed

    def status(self) -> dict:
        """The health document's `outbox` value."""
        out: dict = {"pending": len(self._items), "dropped": self.dropped}
        if self.last_drop_reason:
            out["lastDropReason"] = self.last_drop_reason
        if self.last_drop_at:
            out["at"] = self.last_drop_at
        return out

    # -- persistence (inside detect-state.json) ------------------------------------------------------------
    def to_json(self) -> dict:
        return {"items": [list(item) for item in self._items], "dropped": self.dropped,
                "lastDropReason": self.last_drop_reason, "lastDropAt": self.last_drop_at}

    def load_json(self, data: Any) -> None:
        """Replace the content with a persisted one (checked by `check_json` first)."""
        self._items = collections.deque([list(i) for i in data["items"]][-self.maxlen:])
        self.dropped = data["dropped"]
        self.last_drop_reason = data["lastDropReason"]
        self.last_drop_at = data["lastDropAt"]


def check_json(data: Any, where: str = "outbox") -> dict:
    """The persisted outbox in its current form; ValueError naming what is wrong. Also reads the first
    format (a bare list of [kind, payload]), whose items start with no failures."""
    if isinstance(data, list):
        data = {"items": data, "dropped": 0, "lastDropReason": None, "lastDropAt": None}
    need(data, dict, where)
    items = need(data.get("items", []), list, f"{where}.items")
    out = []
    for i, item in enumerate(items):
        need(item, list, f"{where}.items[{i}]")
        if len(item) not in (2, 3):
            raise ValueError(f"{where}.items[{i}] must be [kind, payload] or [kind, payload, failures]")
        kind, payload = item[0], item[1]
        failures = item[2] if len(item) == 3 else 0
        if kind not in KINDS:
            raise ValueError(f"{where}.items[{i}] kind must be one of {', '.join(KINDS)}, not {kind!r}")
        need(payload, dict, f"{where}.items[{i}] payload")
        need(failures, int, f"{where}.items[{i}] failures")
        out.append([kind, payload, max(0, failures)])
    dropped = need(data.get("dropped", 0), int, f"{where}.dropped")
    reason = need(data.get("lastDropReason"), (str, type(None)), f"{where}.lastDropReason")
    at = need(data.get("lastDropAt"), (str, type(None)), f"{where}.lastDropAt")
    return {"items": out, "dropped": max(0, dropped), "lastDropReason": reason, "lastDropAt": at}
