"""The component's health document: what an operator sees without reading a device log.

Every part reports with `report(ipc, path, value)`; it never raises, because a health report must never break
the part that makes it. In process B (`ipc` is the relay client) the report travels to process A, which accepts
only the paths B owns (`check_from_part`). In process A (or a part run alone under a core) it updates the one
process-wide `Health` object, which publishes the whole document on IoT Core `ggdefender/things/{thing}/health`
(QoS 1) and on local topic `ggdefender/health`: at start and on every change, at most once per
`MIN_INTERVAL` seconds, the last state always published. docs/configuration.md ("Health") is the user's view.

Stdlib only: both processes import this at start-up.
"""

from __future__ import annotations

import copy
import datetime
import json
import logging
import re
import threading
from typing import TYPE_CHECKING, Any, Iterator, List, Optional, Tuple, Type, TypeGuard

from ggdefender import ratelog, settings, topics

if TYPE_CHECKING:
    from ggdefender.ipc_port import CollectorPort, IpcPort

log = logging.getLogger("ggdefender.health")

COMPONENT = "ggdefender.Defender"
MAX_VALUE_BYTES = 4096  # one reported value, serialised
MAX_PATH = 128
MAX_PLUGIN_ENTRIES = 64  # parts.plugins.* keys
# the published document stays well inside IoT Core's 128 KiB; only parts.plugins can grow past it (64 x 4 KiB):
# then its entries are left out and the document says so (the fixed entries alone are under 48 KiB)
MAX_DOCUMENT_BYTES = 96 * 1024
MIN_INTERVAL = 1.0  # seconds between two publishes: a flapping part cannot flood IoT Core
SECTIONS = settings.SECTIONS  # the configuration sections, declared once
# EXPORTED: Collector.Export mode "only" (a rule topic has no reply: the nucleus took the report)
REPORT_STATUSES = ("ACCEPTED", "REJECTED", "PUBLISH_FAILED", "EXPORTED")
PART_STATES = ("running", "restarting", "stopped")

# What process B may write through the relay: its own parts' verdicts, never A's (privilegeSeparation, parts.*).
PART_PATHS = frozenset({"configuration.Collector", "configuration.Plugins", "configuration.Detect",
                        "outbox", "lastReport"})
PART_PREFIX = "parts.plugins."
_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$")  # one plugin name (the plugins' own names are narrower)
_PATH = re.compile(r"^[A-Za-z][A-Za-z0-9]*(\.[A-Za-z0-9_:-]+)*$")


# A dropped outbox item degrades the document for a day, then only the count remains: the total is kept for
# good, and one drop long ago must not leave a device "degraded" forever.
DROP_PROBLEM_SECONDS = 86400.0


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# The IPC handles whose health goes to process A's document over the relay: process B's RelayClient adds itself
# as its module loads (no such handle exists before), so this module, shared by both processes, imports none of B.
RELAYED_PORTS: List[Type[CollectorPort]] = []


def report(ipc: Optional[IpcPort], path: str, value: Optional[dict]) -> None:
    """Set (or, with None, remove) `path` of the health document. Never raises."""
    try:
        value = bounded(value)
        if _relayed(ipc):
            ipc.health(path, value)
        else:
            process_health().set(path, value, ipc=ipc)
    except Exception as exc:  # includes the relay being gone; the part goes on either way
        log.warning("health: could not report %s: %s", path, exc)


def _relayed(ipc: Optional[IpcPort]) -> TypeGuard[CollectorPort]:
    return isinstance(ipc, tuple(RELAYED_PORTS))


def configuration(ipc: Optional[IpcPort], section: str, accepted: bool, reason: Optional[str] = None,
                  using_last_good: Optional[bool] = None) -> None:
    """Report a part's verdict on its configuration section (`configuration.<section>`)."""
    value: dict = {"accepted": bool(accepted), "at": now_iso()}
    if reason:
        value["reason"] = str(reason)[:1000]
    if using_last_good is not None:
        value["usingLastGood"] = bool(using_last_good)
    report(ipc, f"configuration.{section}", value)


def bounded(value: Any) -> Optional[dict]:
    """`value` if it is a JSON object of at most MAX_VALUE_BYTES serialised, else a small error object."""
    if value is None:
        return None
    if not isinstance(value, dict):
        return {"error": f"health value must be an object, not {type(value).__name__}"}
    try:
        data = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        return {"error": f"health value not serialisable: {exc}"[:200]}
    if len(data.encode()) > MAX_VALUE_BYTES:
        return {"error": "health value too large"}
    return json.loads(data)  # a copy: later changes by the caller do not leak into the document


def check_from_part(path: Any, value: Any) -> None:
    """Raise ValueError unless process B may set `path` to `value` (process A's relay calls this)."""
    if not isinstance(path, str) or len(path) > MAX_PATH:
        raise ValueError("'path' must be a string")
    if path in PART_PATHS:
        pass
    elif path.startswith(PART_PREFIX) and _KEY.match(path[len(PART_PREFIX):] or ""):
        pass
    else:
        raise PermissionError(f"health path {path!r} is not one the collector process owns "
                              f"(allowed: {', '.join(sorted(PART_PATHS))}, {PART_PREFIX}<name>)")
    if value is None:
        return
    if not isinstance(value, dict):
        raise ValueError("'value' must be an object or null")
    if len(json.dumps(value, separators=(",", ":")).encode()) > MAX_VALUE_BYTES:
        raise ValueError(f"'value' over {MAX_VALUE_BYTES} bytes")
    if "error" in value and len(value) == 1 and isinstance(value["error"], str):
        return  # what bounded() substitutes for an unusable value
    if path.startswith("configuration."):
        _shape(value, {"accepted": bool}, {"reason": str, "usingLastGood": bool, "at": str})
    elif path == "outbox":
        _shape(value, {"pending": int, "dropped": int}, {"lastDropReason": str, "at": str})
    elif path == "lastReport":
        _shape(value, {"status": str, "at": str}, {"reportId": int, "reason": str, "topic": str})
        if value["status"] not in REPORT_STATUSES:
            raise ValueError(f"lastReport.status must be one of {', '.join(REPORT_STATUSES)}")
    else:  # one plugin: flat scalars only
        for k, v in value.items():
            if not isinstance(v, (str, int, float, bool)) and v is not None:
                raise ValueError(f"{path}.{k} must be a string, number, boolean or null")


def _shape(value: dict, required: dict, optional: dict) -> None:
    for key, kind in required.items():
        if key not in value:
            raise ValueError(f"missing {key!r}")
    for key, v in value.items():
        kind = required.get(key) or optional.get(key)
        if kind is None:
            raise ValueError(f"unknown key {key!r}")
        if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
            raise ValueError(f"{key!r} must be {kind.__name__}")


# -- process A -------------------------------------------------------------------------------------------------
class Health:
    """The health document of this process and its publisher thread (started by `start`)."""

    def __init__(self, *, min_interval: float = MIN_INTERVAL):
        self.min_interval = min_interval
        self._doc: dict = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._dirty = False
        self._ipc: Optional[IpcPort] = None
        self._thing = ""
        self._thread: Optional[threading.Thread] = None
        self._stopped = False
        self.published = 0  # count of documents published (tests, diagnostics)
        self._publish_log = ratelog.RateLimitedLog(log)

    # -- the document --------------------------------------------------------------------------------------------
    def set(self, path: str, value: Optional[dict], *, ipc: Optional[IpcPort] = None) -> None:
        keys = path.split(".") if isinstance(path, str) and _PATH.match(path) and len(path) <= MAX_PATH else None
        if not keys:
            log.warning("health: invalid path %r ignored", path)
            return
        value = bounded(value)
        with self._lock:
            if keys[:2] == ["parts", "plugins"] and value is not None:
                plugins = self._doc.get("parts", {}).get("plugins", {})
                if len(keys) > 2 and keys[2] not in plugins and len(plugins) >= MAX_PLUGIN_ENTRIES:
                    log.warning("health: over %d plugin entries; %s ignored", MAX_PLUGIN_ENTRIES, path)
                    return
            node = self._doc
            if value is None:
                trail = []
                for key in keys[:-1]:
                    if not isinstance(node.get(key), dict):
                        return
                    trail.append((node, key))
                    node = node[key]
                if keys[-1] not in node:
                    return
                del node[keys[-1]]
                for parent, key in reversed(trail):  # drop emptied parents
                    if parent[key]:
                        break
                    del parent[key]
            else:
                for key in keys[:-1]:
                    if not isinstance(node.get(key), dict):
                        node[key] = {}
                    node = node[key]
                if node.get(keys[-1]) == value:
                    return  # no change: nothing to publish
                node[keys[-1]] = value
            self._dirty = True
            self._wake.notify_all()
        if self._ipc is None and ipc is not None:
            self._maybe_attach(ipc)

    def get(self, path: str) -> Any:
        with self._lock:
            node: Any = self._doc
            for key in path.split("."):
                if not isinstance(node, dict) or key not in node:
                    return None
                node = node[key]
            return copy.deepcopy(node)

    def document(self, max_bytes: int = MAX_DOCUMENT_BYTES) -> dict:
        """The whole document as published (parts.plugins left out when it would be over max_bytes)."""
        with self._lock:
            body = copy.deepcopy(self._doc)
            thing = self._thing
        doc: dict = {"thingName": thing, "component": COMPONENT, "updatedAt": now_iso(), "status": status_of(body)}
        doc.update(body)
        if len(json.dumps(doc, separators=(",", ":")).encode()) > max_bytes:
            plugins = doc.get("parts", {}).pop("plugins", {})
            doc["truncated"] = f"{len(plugins)} parts.plugins entries left out: document over {max_bytes} bytes"
        return doc

    # -- publishing ------------------------------------------------------------------------------------------------
    def start(self, ipc: IpcPort, thing: Optional[str] = None) -> "Health":
        """Publish through `ipc` from now on (at once, then on every change)."""
        from ggdefender.ipc import Ipc  # here: process B imports this module and never starts a document

        with self._lock:
            self._ipc = ipc
            self._thing = thing if thing is not None else str(getattr(ipc, "thing_name", "") or "")
            if isinstance(ipc, Ipc):  # the Greengrass IPC client this process speaks with, and why (ipc.choose_client)
                self._doc["ipcClient"] = {"name": ipc.client_name, "reason": ipc.client_reason[:300]}
            self._stopped = False
            self._dirty = True
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="health-publisher", daemon=True)
                self._thread.start()
            self._wake.notify_all()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Publish what is pending (best effort), then stop the publisher."""
        with self._lock:
            self._stopped = True
            self._wake.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _maybe_attach(self, ipc: IpcPort) -> None:
        # A part run alone under a core (direct `Ipc`) publishes its own document, as process A would.
        from ggdefender.ipc import Ipc

        if isinstance(ipc, Ipc):
            self.start(ipc)

    def _loop(self) -> None:
        backoff = self.min_interval
        final = False  # after stop(): one last publish of a pending change, then end
        while True:
            with self._lock:
                while not self._dirty and not self._stopped:
                    self._wake.wait()
                if not self._dirty or final:
                    return
                final = self._stopped
                self._dirty = False
                ipc, thing = self._ipc, self._thing
            assert ipc is not None  # start() set it before it started this thread
            # nucleus lite takes smaller IoT Core messages over IPC (ipc.LITE_MAX_IOT_PAYLOAD); known once the
            # supervisor asked, and never asked from here (this thread must not wait on the nucleus)
            limit = getattr(ipc, "known_max_iot_payload", None)
            try:
                max_bytes = min(MAX_DOCUMENT_BYTES, limit()) if callable(limit) else MAX_DOCUMENT_BYTES
            except Exception:
                max_bytes = MAX_DOCUMENT_BYTES
            doc = self.document(max_bytes)
            failed = []
            # each destination on its own: a nucleus that cannot reach IoT Core (nucleus lite refuses the publish
            # at once) still delivers the document to local subscribers
            if thing:
                try:
                    ipc.publish_iot(topics.health(thing), json.dumps(doc, separators=(",", ":")).encode(), qos=1)
                except Exception as exc:
                    failed.append(f"IoT Core: {exc}")
            try:
                ipc.publish_local(topics.HEALTH, doc)
            except Exception as exc:
                failed.append(f"local: {exc}")
            if not failed:
                self.published += 1
                backoff = self.min_interval
                self._publish_log.recovered("publish", "health: the document is published again")
            else:  # keep the latest state and try again; said once, then summarised now and then
                self._publish_log.failed("publish", "health: publish failed (%s); retrying with backoff up to "
                                         "60 s", "; ".join(failed))
                with self._lock:
                    self._dirty = True
                backoff = min(backoff * 2, 60.0)
            with self._lock:  # the coalescing window: changes meanwhile go out together afterwards
                if not self._stopped:
                    self._wake.wait_for(lambda: self._stopped, timeout=backoff if self._dirty else self.min_interval)


def status_of(body: dict) -> str:
    """"degraded" when anything an operator should act on is in the document, else "ok"."""
    return "degraded" if problems(body) else "ok"


def problems(body: dict) -> list:
    """One line per reason the document is degraded (also shown by `ggdefender local status`)."""
    out = []
    for section, verdict in sorted((body.get("configuration") or {}).items()):
        if isinstance(verdict, dict) and verdict.get("accepted") is False:
            out.append(f"configuration {section} rejected: {verdict.get('reason') or 'no reason given'}")
    privsep = body.get("privilegeSeparation")
    if isinstance(privsep, dict) and privsep.get("on") is False and privsep.get("root", True):
        out.append(f"privilege separation off: {privsep.get('reason') or 'no reason given'}")
    for name, part in _parts(body.get("parts")):
        if part.get("state") not in (None, "running"):
            out.append(f"part {name} {part.get('state')}: {part.get('cause') or part.get('lastExit') or ''}".rstrip(": "))
    outbox = body.get("outbox")
    if isinstance(outbox, dict) and isinstance(outbox.get("dropped"), int) and outbox["dropped"] > 0 \
            and _recent(outbox.get("at"), DROP_PROBLEM_SECONDS):
        out.append(f"outbox dropped {outbox['dropped']} item(s): {outbox.get('lastDropReason') or ''}".rstrip(": "))
    last = body.get("lastReport")
    if isinstance(last, dict) and last.get("status") not in (None, "ACCEPTED", "EXPORTED"):
        out.append(f"last report {last.get('status')}: {last.get('reason') or ''}".rstrip(": "))
    return out


def _recent(at: Any, seconds: float) -> bool:
    """Whether ISO time `at` is within `seconds` of now; an unknown time counts as recent."""
    try:
        when = datetime.datetime.fromisoformat(str(at).replace("Z", "+00:00"))
    except ValueError:
        return True
    return (datetime.datetime.now(datetime.timezone.utc) - when).total_seconds() < seconds


def _parts(parts: Any, prefix: str = "") -> Iterator[Tuple[str, dict]]:
    if not isinstance(parts, dict):
        return
    for name, part in sorted(parts.items()):
        if not isinstance(part, dict):
            continue
        if "state" in part or "restarts" in part:
            yield prefix + name, part
        else:  # a group such as parts.plugins
            yield from _parts(part, f"{prefix}{name}.")


_process_health: Optional[Health] = None
_process_lock = threading.Lock()


def process_health() -> Health:
    """The one Health object of this process."""
    global _process_health
    with _process_lock:
        if _process_health is None:
            _process_health = Health()
        return _process_health
