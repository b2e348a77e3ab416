"""The state of the offline Greengrass core: components and tokens, configuration, local pub/sub, IoT Core.

`Core` is what the IPC operations act on and what the runtime (lifecycle runner, cloud side, bridge, CLI)
drives. Every public method is thread-safe. Deliveries to IPC subscribers and cloud-side listeners run on
the IPC server's event loop once a server is attached (`attach_loop`), so a publish from any thread keeps
per-thread order and never writes to a socket from the wrong thread; without a server they run inline.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import secrets
import string
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

from ggdefender.jobs_protocol import THING_NAME

from .authz import Authorizer, denial_message

log = logging.getLogger("ggdefender.local.nucleus.core")

LIFECYCLE_STATES = ("NEW", "INSTALLED", "STARTING", "RUNNING", "STOPPING", "ERRORED", "BROKEN", "FINISHED")
RECEIVE_ALL = "RECEIVE_ALL_MESSAGES"
RECEIVE_FROM_OTHERS = "RECEIVE_MESSAGES_FROM_OTHERS"
ACCESS_CONTROL = "accessControl"
_TOKEN_ALPHABET = string.ascii_uppercase + string.digits


def thing_name_problem(thing: Any) -> Optional[str]:
    """None for a valid thing name, else what is wrong with it. AWS IoT's rule (jobs_protocol.THING_NAME, the
    one rule): the name goes into topics, accessControl resources ({iot:thingName}) and folder names under
    <root>/cloud/, so "a/#" or ".." must never pass."""
    if not isinstance(thing, str) or not THING_NAME.match(thing):
        return f"thing name {thing!r} is not valid: AWS IoT allows 1-128 characters of A-Z a-z 0-9 : _ -"
    return None


class FailedUpdateCondition(Exception):
    """UpdateConfiguration's timestamp is older than the node it would change."""


@dataclass
class ComponentRecord:
    name: str
    version: str
    svcuid: str
    state: str = "NEW"
    registered_at: float = field(default_factory=time.time)
    policy_errors: list = field(default_factory=list)


# -- MQTT topic matching -------------------------------------------------------------------------------

def is_wildcard_filter(topic_filter: str) -> bool:
    return "+" in topic_filter or "#" in topic_filter


def validate_filter(topic_filter: str) -> Optional[str]:
    """None when topic_filter is a valid MQTT filter, else the reason it is not."""
    if not topic_filter:
        return "topic filter is empty"
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return "'#' must be a whole level and the last one"
        if "+" in level and level != "+":
            return "'+' must be a whole level"
    return None


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT 3.1.1 matching of a topic name against a filter (`+` one level, `#` the rest, `$` topics hidden
    from filters that start with a wildcard)."""
    if topic_filter == topic:
        return True
    if "+" not in topic_filter and "#" not in topic_filter:
        return False
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, f in enumerate(f_levels):
        if f == "#":
            return True  # also matches the parent level ("a/#" matches "a")
        if i >= len(t_levels):
            return False
        if f != "+" and f != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)


class _Subscriptions:
    """Topic subscriptions split into exact topics (dict lookup) and wildcard filters (scanned)."""

    def __init__(self) -> None:
        self.exact: dict[str, list] = {}
        self.wild: list = []

    def add(self, topic_filter: str, sub: Any) -> None:
        if is_wildcard_filter(topic_filter):
            self.wild.append(sub)
        else:
            self.exact.setdefault(topic_filter, []).append(sub)

    def remove(self, topic_filter: str, sub: Any) -> None:
        if is_wildcard_filter(topic_filter):
            if sub in self.wild:
                self.wild.remove(sub)
        else:
            subs = self.exact.get(topic_filter)
            if subs and sub in subs:
                subs.remove(sub)
                if not subs:
                    del self.exact[topic_filter]

    def matching(self, topic: str) -> list:
        found = list(self.exact.get(topic, ()))
        for sub in self.wild:
            if topic_matches(sub.topic_filter, topic):
                found.append(sub)
        return found

    def __len__(self) -> int:
        return sum(len(v) for v in self.exact.values()) + len(self.wild)


@dataclass(eq=False)
class _TopicSub:
    topic_filter: str
    component: str  # "" for cloud-side listeners
    deliver: Callable
    receive_mode: str = RECEIVE_ALL
    qos: int = 1


@dataclass(eq=False)
class _ConfigSub:
    component: str  # whose configuration
    key_path: tuple
    deliver: Callable[[str, list], None]


# -- configuration store ---------------------------------------------------------------------------------

class ConfigStore:
    """Per-component configuration trees with a modification time per node, like the nucleus's Topics.

    Not locked by itself: `Core` holds its lock around every call.
    """

    def __init__(self) -> None:
        self._trees: dict[str, dict] = {}
        self._mtimes: dict[str, dict[tuple, float]] = {}

    def has(self, name: str) -> bool:
        return name in self._trees

    def set_tree(self, name: str, tree: dict, timestamp: float) -> None:
        self._trees[name] = copy.deepcopy(tree) if isinstance(tree, dict) else {}
        self._mtimes[name] = {}
        self._stamp_all(name, (), self._trees[name], timestamp)

    def drop(self, name: str) -> None:
        self._trees.pop(name, None)
        self._mtimes.pop(name, None)

    def _stamp_all(self, name: str, path: tuple, value: Any, ts: float) -> None:
        self._mtimes[name][path] = ts
        if isinstance(value, dict):
            for k, v in value.items():
                self._stamp_all(name, path + (k,), v, ts)

    def _forget_under(self, name: str, path: tuple) -> None:
        times = self._mtimes[name]
        n = len(path)
        for p in [p for p in times if len(p) > n and p[:n] == path]:
            del times[p]

    def node(self, name: str, key_path: Iterable[str]) -> Any:
        """The node at key_path (live object); KeyError when the component or key is missing."""
        node: Any = self._trees[name]
        for key in key_path:
            if not isinstance(node, dict) or key not in node:
                raise KeyError(key)
            node = node[key]
        return node

    def mtime(self, name: str, key_path: Iterable[str]) -> Optional[float]:
        return self._mtimes.get(name, {}).get(tuple(key_path))

    def merge(self, name: str, key_path: tuple, value: Any, ts: float) -> list[tuple]:
        """MERGE value at key_path (dicts merge recursively, anything else replaces); leaves whose
        modification time is newer than ts are kept. Returns the changed paths."""
        if name not in self._trees:
            raise KeyError(name)
        changed: list[tuple] = []
        if not key_path:
            if not isinstance(value, dict):
                raise ValueError("the configuration root can only be merged with an object")
            self._merge_into(name, self._trees[name], (), value, ts, changed)
            return changed
        parent = self._container(name, key_path[:-1], ts, changed)
        self._merge_key(name, parent, key_path, value, ts, changed)
        return changed

    def _container(self, name: str, path: tuple, ts: float, changed: list) -> dict:
        node = self._trees[name]
        for i, key in enumerate(path):
            child = node.get(key)
            if not isinstance(child, dict):
                sub = path[:i + 1]
                if child is not None:
                    self._forget_under(name, sub)
                node[key] = child = {}
                self._mtimes[name][sub] = ts  # a new interior node is not an event (the nucleus skips interiorAdded)
            node = child
        return node

    def _merge_into(self, name: str, target: dict, path: tuple, value: dict, ts: float, changed: list) -> None:
        for k, v in value.items():
            self._merge_key(name, target, path + (str(k),), v, ts, changed)
        times = self._mtimes[name]
        times[path] = max(times.get(path, ts), ts)

    def _merge_key(self, name: str, parent: dict, path: tuple, value: Any, ts: float, changed: list) -> None:
        key = path[-1]
        times = self._mtimes[name]
        old = parent.get(key, _ABSENT)
        if isinstance(value, dict):
            if not isinstance(old, dict):
                if old is not _ABSENT and times.get(path, 0.0) > ts:
                    return
                if old is not _ABSENT:
                    changed.append(path)  # a value replaced by an object: report the removed leaf
                parent[key] = {}
                times[path] = ts
            self._merge_into(name, parent[key], path, value, ts, changed)
            return
        if old is not _ABSENT and times.get(path, 0.0) > ts:
            return  # a newer write wins, as Topic.withNewerValue does
        if isinstance(old, dict):
            self._forget_under(name, path)
        elif old is not _ABSENT and old == value and type(old) is type(value):
            times[path] = ts
            return
        parent[key] = copy.deepcopy(value)
        times[path] = ts
        changed.append(path)

    def remove(self, name: str, key_path: tuple) -> bool:
        try:
            parent = self.node(name, key_path[:-1])
        except KeyError:
            return False
        if not isinstance(parent, dict) or key_path[-1] not in parent:
            return False
        del parent[key_path[-1]]
        self._forget_under(name, key_path)
        self._mtimes[name].pop(key_path, None)
        return True


_ABSENT = object()


def _walk(tree: Any, path: tuple) -> Any:
    """The value at path in a plain nested dict, or _ABSENT."""
    node = tree
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return _ABSENT
        node = node[key]
    return node


def _parse_pointer(pointer: str) -> tuple:
    """greengrass-cli RESET path "/a/b" (JSON pointer; "" or "/" is the whole configuration)."""
    if not isinstance(pointer, str):
        raise ValueError(f"RESET path must be a string, got {type(pointer).__name__}")
    if pointer in ("", "/"):
        return ()
    if not pointer.startswith("/"):
        raise ValueError(f"RESET path {pointer!r} must start with '/'")
    return tuple(p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/"))


# -- the core ---------------------------------------------------------------------------------------------

class Core:
    """Components, tokens, configuration, local pub/sub and the IoT Core router of one offline core."""

    def __init__(self, *, thing_name: str, region: str = "us-east-1"):
        self.thing_name = thing_name
        self.region = region
        self._lock = threading.RLock()
        self._components: dict[str, ComponentRecord] = {}
        self._tokens: dict[str, str] = {}
        self._config = ConfigStore()
        # the nucleus's own configuration, readable by every component as on the real nuclei (the Java nucleus's
        # services.aws.greengrass.Nucleus.configuration; nucleus lite answers for aws.greengrass.Nucleus from its
        # aws.greengrass.NucleusLite entry: COMPONENT_ALIASES in ggipcd's config_path_object.c)
        self._config.set_tree("aws.greengrass.Nucleus", {"awsRegion": region}, 0.0)
        self._authz = Authorizer()
        self._local = _Subscriptions()
        self._iot = _Subscriptions()  # component subscriptions and cloud-side listeners alike
        self._config_subs: list[_ConfigSub] = []
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_thread: Optional[int] = None
        self.on_state_change: Optional[Callable[[str, str], None]] = None
        self.on_restart_request: Optional[Callable[[str], bool]] = None
        self.on_event: Optional[Callable[[dict], None]] = None

    # -- event loop ----------------------------------------------------------------------------------
    def attach_loop(self, loop: asyncio.AbstractEventLoop, thread_id: Optional[int] = None) -> None:
        """Called by the IPC server: deliveries run on this loop from now on."""
        self._loop = loop
        self._loop_thread = thread_id if thread_id is not None else threading.get_ident()

    def detach_loop(self) -> None:
        self._loop = None
        self._loop_thread = None

    def _on_loop(self, fn: Callable, *args: Any) -> None:
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            try:
                loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # loop closed while stopping: nobody left to deliver to
                pass

    def emit(self, event: dict) -> None:
        hook = self.on_event
        if hook is not None:
            try:
                hook(event)
            except Exception:
                log.exception("on_event hook failed")

    # -- identity ------------------------------------------------------------------------------------
    def register_component(self, name: str, version: str, configuration: dict) -> str:
        if not isinstance(name, str) or not name:
            raise ValueError("component name must be a non-empty string")
        if configuration is None:
            configuration = {}
        if not isinstance(configuration, dict):
            raise ValueError(f"component {name}: configuration must be an object, got {type(configuration).__name__}")
        token = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(16))
        with self._lock:
            old = self._components.get(name)
            if old is not None:
                self._tokens.pop(old.svcuid, None)
            errors = self._authz.load(name, configuration)
            self._config.set_tree(name, configuration, time.time())
            record = ComponentRecord(name, str(version), token, old.state if old else "NEW", policy_errors=errors)
            self._components[name] = record
            self._tokens[token] = name
        for e in errors:
            self.emit({"kind": "policy-error", "component": name, "message": e})
        if old is not None:
            self._config_changed(name, [()])
        return token

    def unregister_component(self, name: str) -> None:
        with self._lock:
            record = self._components.pop(name, None)
            if record is None:
                raise KeyError(name)
            self._tokens.pop(record.svcuid, None)
            self._authz.remove(name)
            self._config.drop(name)

    def components(self) -> dict[str, ComponentRecord]:
        with self._lock:
            return dict(self._components)

    def component(self, name: str) -> ComponentRecord:
        """KeyError when not registered."""
        with self._lock:
            return self._components[name]

    def authenticate(self, token: Any) -> Optional[str]:
        """Component name owning this SVCUID, or None."""
        if not isinstance(token, str) or not token:
            return None
        with self._lock:
            return self._tokens.get(token)

    def set_state(self, name: str, state: str) -> None:
        if state not in LIFECYCLE_STATES:
            raise ValueError(f"unknown lifecycle state {state!r}; expected one of {', '.join(LIFECYCLE_STATES)}")
        with self._lock:
            record = self._components[name]
            changed = record.state != state
            record.state = state
        if changed:
            self.emit({"kind": "state", "component": name, "state": state})
            hook = self.on_state_change
            if hook is not None:
                try:
                    hook(name, state)
                except Exception:
                    log.exception("on_state_change hook failed")

    def request_restart(self, name: str) -> bool:
        """RestartComponent: asks the runtime. KeyError if the component is unknown."""
        with self._lock:
            if name not in self._components:
                raise KeyError(name)
        hook = self.on_restart_request
        self.emit({"kind": "restart-request", "component": name})
        if hook is None:
            return False
        return bool(hook(name))

    # -- authorization ---------------------------------------------------------------------------------
    def is_authorized(self, principal: str, service: str, operation: str, resource: str) -> bool:
        with self._lock:
            allowed = self._authz.is_authorized(principal, service, operation, resource)
        if not allowed:
            self.emit({"kind": "denied", "component": principal, "service": service, "operation": operation,
                       "topic": resource, "message": denial_message(principal, service, operation, resource)})
        return allowed

    # -- configuration -------------------------------------------------------------------------------
    def get_config(self, name: str, key_path: Iterable[str] = ()) -> Any:
        with self._lock:
            return copy.deepcopy(self._config.node(name, list(key_path)))

    def merge_config(self, name: str, key_path: list[str], value: Any, timestamp: float | None = None) -> None:
        path = tuple(str(k) for k in key_path or ())
        ts = time.time() if timestamp is None else float(timestamp)
        with self._lock:
            if name not in self._components:
                raise KeyError(name)
            changed = self._config.merge(name, path, value, ts)
            if changed and (path[:1] == (ACCESS_CONTROL,) or (not path and isinstance(value, dict)
                                                                and ACCESS_CONTROL in value)):
                self._reload_policies(name)
        if changed:
            self._config_changed(name, changed)

    def update_configuration(self, name: str, key_path: list[str], value_to_merge: Any, timestamp: float) -> None:
        """UpdateConfiguration as the nucleus serves it (the caller's own configuration only).

        ValueError for invalid arguments, FailedUpdateCondition when timestamp is older than the node."""
        path = tuple(key_path or ())
        if not isinstance(value_to_merge, dict):
            raise ValueError("valueToMerge must be an object")
        if (path[:1] == (ACCESS_CONTROL,)) or (not path and ACCESS_CONTROL in value_to_merge):
            raise ValueError(f"Config update is not allowed for following fields [{ACCESS_CONTROL}]")
        ts = float(timestamp)
        with self._lock:
            if name not in self._components:
                raise KeyError(name)
            try:
                node = self._config.node(name, path)
            except KeyError:
                node = _ABSENT
                ts = time.time()  # a node created by this update gets the current time, as in the nucleus
            if node is not _ABSENT and not isinstance(node, dict):
                # the nucleus merges the map into the leaf's parent under the leaf's name, which fails
                raise ValueError(f"key path {'/'.join(path)} names a value, not an object: "
                                 f"use the parent key path {list(path[:-1])} to change it")
            mtime = self._config.mtime(name, path)
            if mtime is not None and ts < mtime:
                raise FailedUpdateCondition("Proposed timestamp is older than the config's latest modified timestamp")
            changed = self._config.merge(name, path, value_to_merge, ts)
        if changed:
            self._config_changed(name, changed)

    def reset_config(self, name: str, pointer: str, default_configuration: dict) -> None:
        path = _parse_pointer(pointer)
        defaults = default_configuration if isinstance(default_configuration, dict) else {}
        ts = time.time()
        with self._lock:
            if name not in self._components:
                raise KeyError(name)
            if not path:
                self._config.set_tree(name, defaults, ts)
                changed = [()]
            else:
                default = _walk(defaults, path)
                if default is _ABSENT:
                    changed = [path] if self._config.remove(name, path) else []
                else:
                    self._config.remove(name, path)
                    changed = self._config.merge(name, path, copy.deepcopy(default), ts) or [path]
            if path[:1] in ((), (ACCESS_CONTROL,)):
                self._reload_policies(name)
        if changed:
            self._config_changed(name, changed)

    def _reload_policies(self, name: str) -> None:
        try:
            access = self._config.node(name, [ACCESS_CONTROL])
        except KeyError:
            access = None
        errors = self._authz.load(name, {ACCESS_CONTROL: access})
        self._components[name].policy_errors = errors

    def subscribe_config(self, component: str, key_path: Iterable[str],
                         deliver: Callable[[str, list], None]) -> Callable[[], None]:
        """deliver(component, changed_key_path) for each change at or under (or above) key_path.
        KeyError when the component is unknown."""
        sub = _ConfigSub(component, tuple(key_path), deliver)
        with self._lock:
            if not self._config.has(component):
                raise KeyError(component)
            self._config_subs.append(sub)

        def unsubscribe() -> None:
            with self._lock:
                if sub in self._config_subs:
                    self._config_subs.remove(sub)
        return unsubscribe

    def _config_changed(self, name: str, changed: list[tuple]) -> None:
        self.emit({"kind": "config-update", "component": name, "paths": ["/".join(p) for p in changed]})
        with self._lock:
            subs = [s for s in self._config_subs if s.component == name]
        if not subs:
            return
        events = []
        for sub in subs:
            n = len(sub.key_path)
            for path in changed:
                if path[:n] == sub.key_path or sub.key_path[:len(path)] == path:
                    events.append((sub, list(path)))
        if events:
            self._on_loop(self._deliver_config, events)

    def _deliver_config(self, events: list) -> None:
        for sub, path in events:
            try:
                sub.deliver(sub.component, path)
            except Exception:
                log.exception("configuration update delivery failed")

    # -- local pub/sub ---------------------------------------------------------------------------------
    def subscribe_local(self, component: str, topic: str, deliver: Callable[[str, Any, str], None],
                        receive_mode: Optional[str] = None) -> Callable[[], None]:
        """deliver(topic, message (dict|bytes), source) for each matching local publish."""
        mode = receive_mode or (RECEIVE_FROM_OTHERS if is_wildcard_filter(topic) else RECEIVE_ALL)
        sub = _TopicSub(topic, component, deliver, mode)
        with self._lock:
            self._local.add(topic, sub)

        def unsubscribe() -> None:
            with self._lock:
                self._local.remove(topic, sub)
        return unsubscribe

    def publish_local(self, topic: str, message: dict | bytes, *, source: str = "local-core") -> None:
        if isinstance(message, (bytearray, memoryview)):
            message = bytes(message)
        self._on_loop(self._route_local, topic, message, source)

    def _route_local(self, topic: str, message: Any, source: str) -> None:
        with self._lock:
            subs = self._local.matching(topic)
        size = len(message) if isinstance(message, bytes) else None
        if self.on_event is not None:
            self.emit({"kind": "local-publish", "component": source, "topic": topic, "bytes": size,
                       "subscribers": len(subs)})
        for sub in subs:
            if sub.receive_mode == RECEIVE_FROM_OTHERS and sub.component == source:
                continue
            try:
                sub.deliver(topic, message, source)
            except Exception:
                log.exception("local delivery on %s failed", topic)

    # -- IoT Core ------------------------------------------------------------------------------------------
    def subscribe_iot_component(self, component: str, topic_filter: str, qos: int,
                                deliver: Callable[[str, bytes, str], None]) -> Callable[[], None]:
        """A component's SubscribeToIoTCore: deliver(topic, payload, source)."""
        sub = _TopicSub(topic_filter, component, deliver, RECEIVE_ALL, qos)
        with self._lock:
            self._iot.add(topic_filter, sub)
        self.emit({"kind": "iot-subscribe", "component": component, "topic": topic_filter})

        def unsubscribe() -> None:
            with self._lock:
                self._iot.remove(topic_filter, sub)
        return unsubscribe

    def subscribe_iot(self, topic_filter: str, callback: Callable[[str, bytes, str], None]) -> Callable[[], None]:
        """A cloud-side listener: callback(topic, payload, source) for every matching IoT Core message."""
        reason = validate_filter(topic_filter)
        if reason:
            raise ValueError(f"invalid topic filter {topic_filter!r}: {reason}")
        sub = _TopicSub(topic_filter, "", callback)
        with self._lock:
            self._iot.add(topic_filter, sub)

        def unsubscribe() -> None:
            with self._lock:
                self._iot.remove(topic_filter, sub)
        return unsubscribe

    def publish_iot(self, topic: str, payload: bytes, *, source: str = "cloud", qos: int = 1) -> None:
        """Route an IoT Core message to component subscribers and cloud-side listeners whose filter matches."""
        if isinstance(payload, str):
            payload = payload.encode()
        elif not isinstance(payload, bytes):
            payload = bytes(payload)
        self._on_loop(self._route_iot, topic, payload, source, qos)

    def _route_iot(self, topic: str, payload: bytes, source: str, qos: int) -> None:
        with self._lock:
            subs = self._iot.matching(topic)
        if self.on_event is not None:
            self.emit({"kind": "iot-publish", "component": source, "topic": topic, "bytes": len(payload),
                       "subscribers": len(subs)})
        for sub in subs:
            try:
                sub.deliver(topic, payload, source)
            except Exception:
                log.exception("IoT Core delivery on %s failed", topic)

    # -- introspection (tests, live view) -------------------------------------------------------------
    def subscription_counts(self) -> dict[str, int]:
        with self._lock:
            return {"local": len(self._local), "iot": len(self._iot), "config": len(self._config_subs)}
