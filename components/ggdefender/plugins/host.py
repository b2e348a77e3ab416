"""The plugin host: runs the enabled plugins in isolation and hands the collector a validated `custom_metrics`.

Isolation rules (a plugin can never delay or break the collector):
- each sample runs in its own daemon thread; `collect()` waits at most `TimeoutSeconds` for all of them
  together, then reports what arrived; a plugin that raises, times out or returns a wrong value is logged
  with its name and left out of that report (a problem that repeats on every report is logged once, then
  summarised with its count every WARNING_SUMMARY_SECONDS, and a line says when the plugin works again);
- a plugin whose previous call has not returned is not called again (one thread per plugin at most, and a
  global cap), so a hung plugin costs one parked thread, not one per report;
- daemon threads, not an executor: a hung plugin must not keep the process from exiting.

Intervals: a plugin is sampled when its last good sample is older than its `IntervalSeconds` (0: for every
report) or than `MaxSampleAgeSeconds`; in between, the last good sample is reported again.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Dict, List, Optional, Tuple, Type

from .. import settings
from ..ratelog import RateLimitedLog
from ..settings import ConfigError
from .contract import HOST_KEYS, Plugin, SampleError, ValueType, check_metric_name, validate_value
from .external import ExternalMetrics, ExternalSettings
from . import registry as plugin_registry
from .registry import Registry

log = logging.getLogger("ggdefender.plugins")

MAX_THREADS = 32  # plugin calls in flight at once, hung ones included
WARNING_SUMMARY_SECONDS = 300.0  # a plugin problem that repeats is summarised (with its count) this often
_TOP_KEYS = {"Enabled", "TimeoutSeconds", "MaxSampleAgeSeconds", "Builtins", "EnableInstalled", "Installed",
             "External"}
_EXTERNAL_KEYS = {"Enabled", "MaxMetrics", "MaxAgeSeconds"}


@dataclass(frozen=True)
class PluginConfig:
    name: str
    cls: Type[Plugin]
    interval: float
    options: Dict[str, Any] = field(hash=False, compare=False)
    fingerprint: str = ""  # class + interval + options: an unchanged plugin keeps its instance and state


@dataclass(frozen=True)
class HostSettings:
    enabled: bool = True
    timeout: float = 5.0
    max_sample_age: float = 3600.0
    plugins: Tuple[PluginConfig, ...] = ()
    external: ExternalSettings = ExternalSettings()


def _unknown_keys(section: dict, allowed: Collection[str], where: str) -> None:
    problems = settings.Problems()  # the one policy: each unknown key named with the closest known one
    problems.keys(section, allowed, where, strict=True)
    problems.raise_if_any()


def _plugin_config(cls: Type[Plugin], section: Any, where: str, enabled_default: bool) -> Optional[PluginConfig]:
    section = settings.as_section(section, where)
    _unknown_keys(section, HOST_KEYS | set(cls.options), where)
    if not settings.as_bool(settings.get(section, "Enabled", enabled_default), f"{where}.Enabled"):
        return None
    interval = settings.as_float(settings.get(section, "IntervalSeconds", float(cls.default_interval)),
                                 f"{where}.IntervalSeconds", minimum=0)
    options = {key: default if section.get(key) is None else section[key] for key, default in cls.options.items()}
    fingerprint = json.dumps([cls.__module__, cls.__qualname__, interval, options], sort_keys=True, default=repr)
    return PluginConfig(cls.name, cls, interval, options, fingerprint)


def parse_section(section: Any, registry: Registry) -> HostSettings:
    """The whole `Plugins` section validated into HostSettings; ConfigError lists every bad key (one plugin's
    problem does not hide another's), so one fix-and-redeploy round is enough."""
    section = settings.as_section(section, "Plugins")
    problems = settings.Problems()
    problems.keys(section, _TOP_KEYS, "Plugins", strict=True)
    enabled = problems.value(settings.as_bool, settings.get(section, "Enabled", True), "Plugins.Enabled")
    timeout = problems.value(settings.as_float, settings.get(section, "TimeoutSeconds", 5.0),
                             "Plugins.TimeoutSeconds", minimum=0.05, maximum=60)
    max_age = problems.value(settings.as_float, settings.get(section, "MaxSampleAgeSeconds", 3600.0),
                             "Plugins.MaxSampleAgeSeconds", minimum=1)

    plugins: List[PluginConfig] = []
    builtins = problems.value(settings.as_section, section.get("Builtins"), "Plugins.Builtins", default={})
    for name in builtins:
        if name not in registry.builtins:
            problems.errors.append(f"Plugins.Builtins.{name}: no built-in plugin of that name "
                                   f"(built-ins: {', '.join(registry.builtins)})")
    for name, cls in registry.builtins.items():
        config = problems.value(_plugin_config, cls, builtins.get(name), f"Plugins.Builtins.{name}", True)
        if config:
            plugins.append(config)

    enable_installed = problems.value(settings.as_bool, settings.get(section, "EnableInstalled", True),
                                      "Plugins.EnableInstalled", default=True)
    installed = problems.value(settings.as_section, section.get("Installed"), "Plugins.Installed", default={})
    for name in installed:
        if name not in registry.installed:
            # fleet-wide configuration may name plugins some devices lack: not an error, but say so
            log.warning("Plugins.Installed.%s: no installed plugin of that name on this device; ignored", name)
    for name, cls in registry.installed.items():
        config = problems.value(_plugin_config, cls, installed.get(name), f"Plugins.Installed.{name}",
                                enable_installed)
        if config:
            plugins.append(config)

    ext = problems.value(settings.as_section, section.get("External"), "Plugins.External", default={})
    problems.keys(ext, _EXTERNAL_KEYS, "Plugins.External", strict=True)
    ext_enabled = problems.value(settings.as_bool, settings.get(ext, "Enabled", True), "Plugins.External.Enabled")
    max_metrics = problems.value(settings.as_int, settings.get(ext, "MaxMetrics", 50), "Plugins.External.MaxMetrics",
                                 minimum=0, maximum=1000)
    ext_max_age = problems.value(settings.as_float, settings.get(ext, "MaxAgeSeconds", 900.0),
                                 "Plugins.External.MaxAgeSeconds", minimum=1)
    problems.raise_if_any()
    external = ExternalSettings(enabled=ext_enabled, max_metrics=max_metrics, max_age=ext_max_age)
    return HostSettings(enabled, timeout, max_age, tuple(plugins), external)


class _Slot:
    """One enabled plugin instance, its last good sample and its call in flight (if any)."""

    def __init__(self, config: PluginConfig, plugin: Plugin, metrics: Dict[str, ValueType]):
        self.config = config
        self.plugin = plugin
        self.metrics = metrics
        self.cached: Dict[str, Any] = {}
        self.cached_at: Optional[float] = None
        self.running: Optional[concurrent.futures.Future] = None
        self.running_since = 0.0
        self.retired = False

    @property
    def name(self) -> str:
        return self.config.name

    def validate(self, raw: Any) -> Tuple[Dict[str, Any], List[str]]:
        """The valid values of one call, and what was wrong with the rest (named by plugin and metric)."""
        if not isinstance(raw, dict):
            return {}, [f"plugin {self.name!r}: collect() returned {type(raw).__name__}, expected a dict of "
                        "metric name -> value; skipped for this report"]
        values, problems = {}, []
        for metric, value in raw.items():
            value_type = self.metrics.get(metric)
            if value_type is None:
                problems.append(f"plugin {self.name!r}: returned undeclared metric {str(metric)[:64]!r}; ignored "
                                f"(declared: {', '.join(self.metrics)})")
                continue
            try:
                values[metric] = validate_value(value_type, value)
            except SampleError as exc:
                problems.append(f"plugin {self.name!r}: metric {metric!r} ({value_type.value}) rejected: {exc}; "
                                "skipped for this report")
        return values, problems


class PluginHost:
    """Runs in-process plugins and merges external samples into a validated `custom_metrics` object.

    The `Plugins` part (part.Part). Created with a section (the built-in defaults when none); ConfigError when
    that section is invalid."""

    section = "Plugins"

    def __init__(self, section: Optional[dict] = None, *, registry: Optional[Registry] = None,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time):
        # looked up when called (not bound at import): a test that replaces discovery must not leave it behind
        self.registry = registry if registry is not None else plugin_registry.discover()
        self._clock = clock
        # a failing or hung plugin is seen on every report: its warning is logged once, then summarised
        self._warn = RateLimitedLog(log, every=WARNING_SUMMARY_SECONDS, clock=clock)
        self._lock = threading.RLock()
        self._slots: List[_Slot] = []
        self._in_flight = 0
        self._closed = False
        self.settings = HostSettings()
        self.external = ExternalMetrics(self.settings.external, clock=clock, wall_clock=wall_clock)
        self.reconfigure(section)

    # -- configuration --------------------------------------------------------------------------
    def start(self) -> None:
        """Nothing to begin: plugins start when a section is applied and are sampled by collect()."""

    def reconfigure(self, section: Optional[dict]) -> None:
        """Validate the whole section and swap it in; ConfigError (nothing changed) when it is invalid."""
        new = parse_section(section or {}, self.registry)
        with self._lock:
            current = {slot.config.fingerprint: slot for slot in self._slots}
        kept, created = [], []
        try:
            for config in new.plugins:
                slot = current.get(config.fingerprint)
                if slot is None:
                    slot = self._start_plugin(config)
                    if slot is None:
                        continue
                    created.append(slot)
                kept.append(slot)
            kept = self._check_clashes(kept)
            for slot in created:
                if slot not in kept:
                    self._close_slot(slot)  # refused for a clash; an older refused one closes as removed
        except BaseException:
            for slot in created:
                self._close_slot(slot)
            raise
        with self._lock:
            removed = [slot for slot in self._slots if slot not in kept]
            self._slots, self.settings = kept, new
            self.external.configure(new.external)
            self.external.forget(name for slot in kept for name in slot.metrics)
        for slot in removed:
            self._close_slot(slot)
        log.info("Plugins: %s; in-process metrics: %s", "enabled" if new.enabled else "disabled",
                 ", ".join(m for slot in kept for m in slot.metrics) or "none")

    def _start_plugin(self, config: PluginConfig) -> Optional[_Slot]:
        """A configured plugin instance; ConfigError for bad options, None (logged) when the plugin is broken."""
        where = ("Plugins.Builtins." if config.name in self.registry.builtins else "Plugins.Installed.") + config.name
        try:
            plugin = config.cls()
            plugin.configure(dict(config.options))
            metrics = {check_metric_name(m): ValueType.parse(t) for m, t in dict(plugin.metrics()).items()}
        except ConfigError as exc:
            if config.name in self.registry.builtins or config.options != dict(config.cls.options):
                raise ConfigError(f"{where}: {exc}") from None
            # an installed plugin refusing its own defaults is broken, not misconfigured: disable just it
            # (as a section error it would also fail the fallback to defaults, leaving no plugins at all)
            log.error("plugin %r refuses its own default options: %s; disabled until the next configuration "
                      "change", config.name, exc)
            return None
        except Exception as exc:  # third-party constructor or configure() failing: disable just this plugin
            log.error("plugin %r failed to start: %s: %s; disabled until the next configuration change",
                      config.name, type(exc).__name__, exc)
            return None
        return _Slot(config, plugin, metrics)

    def _check_clashes(self, slots: List[_Slot]) -> List[_Slot]:
        """The slots without metric-name clashes. Built-ins come first: an installed (third-party) plugin
        producing a metric that an earlier plugin produces is disabled and logged, so a pip package can
        never take the built-in metrics down with it; two built-ins clashing (e.g. a disk_usage mount named
        cpu_usage) is a ConfigError."""
        owners: Dict[str, str] = {}
        out: List[_Slot] = []
        for slot in slots:
            clash = next((m for m in slot.metrics if m in owners), None)
            if clash is None:
                owners.update((m, slot.name) for m in slot.metrics)
                out.append(slot)
            elif slot.name in self.registry.builtins:
                raise ConfigError(f"metric {clash!r} is produced by both plugin {owners[clash]!r} "
                                  f"and plugin {slot.name!r}; disable one or rename a metric")
            else:
                log.error("Plugins.Installed.%s: metric %r is already produced by plugin %r; this installed "
                          "plugin is disabled (disable one of them or rename the metric)",
                          slot.name, clash, owners[clash])
        return out

    def _close_slot(self, slot: _Slot) -> None:
        with self._lock:
            slot.retired = True
            if slot.running is not None:
                return  # the worker closes it when the call returns
        _close_plugin(slot)

    # -- collection -------------------------------------------------------------------------------
    def collect(self) -> Dict[str, list]:
        """The report's `custom_metrics` object, validated, in at most `TimeoutSeconds`."""
        with self._lock:
            host_settings, slots = self.settings, list(self._slots)
        if not host_settings.enabled or self._closed:
            return {}
        started = self._clock()
        values: Dict[str, Tuple[ValueType, Any]] = {}
        waiting: List[Tuple[_Slot, concurrent.futures.Future]] = []
        for slot in slots:
            with self._lock:
                fresh_for = min(slot.config.interval, host_settings.max_sample_age)
                if slot.cached_at is not None and started - slot.cached_at < fresh_for:
                    values.update((m, (slot.metrics[m], v)) for m, v in slot.cached.items())
                    continue
                if slot.running is not None:
                    self._warn.failed(slot.name + "/hung", "plugin %r: previous call still running after %.1f s; "
                                      "not called again until it returns, skipped for this report", slot.name,
                                      started - slot.running_since)
                    continue
                if self._in_flight >= MAX_THREADS:
                    self._warn.failed(slot.name, "plugin %r: %d plugin calls already in flight; skipped for this "
                                      "report", slot.name, self._in_flight)
                    continue
                future = self._start_call(slot, started)
            waiting.append((slot, future))

        if waiting:
            concurrent.futures.wait([f for _, f in waiting], timeout=host_settings.timeout)
        for slot, future in waiting:
            if future.done():
                values.update((m, (slot.metrics[m], v)) for m, v in future.result().items())
            else:
                self._warn.failed(slot.name, "plugin %r: no sample within %g s (Plugins.TimeoutSeconds); skipped "
                                  "for this report", slot.name, host_settings.timeout)

        report = {name: [{value_type.report_key: value}] for name, (value_type, value) in values.items()}
        for name, sample in sorted(self.external.current(exclude=report).items()):
            report[name] = [{sample.value_type.report_key: sample.value}]
        return report

    def _start_call(self, slot: _Slot, now: float) -> concurrent.futures.Future:
        # caller holds self._lock
        future: concurrent.futures.Future = concurrent.futures.Future()
        slot.running, slot.running_since = future, now
        self._in_flight += 1
        thread = threading.Thread(target=self._call, args=(slot, future), name=f"plugin-{slot.name}", daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:  # cannot start a thread (resource limit): skip rather than break collect
            slot.running = None
            self._in_flight -= 1
            self._warn.failed(slot.name, "plugin %r: cannot start a worker thread (%s); skipped for this report",
                              slot.name, exc)
            future.set_result({})
        return future

    def _call(self, slot: _Slot, future: concurrent.futures.Future) -> None:
        began = self._clock()
        values: Dict[str, Any] = {}
        ok = False
        problems: List[str] = []
        try:
            values, problems = slot.validate(slot.plugin.collect())
            if problems:
                self._warn.failed(slot.name + "/values", "%s", "; ".join(problems)[:2000])
            ok = True
        except Exception as exc:
            self._warn.failed(slot.name, "plugin %r failed: %s: %s; skipped for this report", slot.name,
                              type(exc).__name__, exc)
        except BaseException as exc:  # SystemExit/KeyboardInterrupt raised inside a plugin must stay inside
            self._warn.failed(slot.name, "plugin %r raised %s; skipped for this report", slot.name,
                              type(exc).__name__)
        finally:
            with self._lock:
                self._in_flight -= 1
                slot.running = None
                if values:
                    slot.cached, slot.cached_at = values, began
                retired = slot.retired
            if ok:
                self._warn.recovered(slot.name, "plugin %r: sampling again", slot.name)
                self._warn.recovered(slot.name + "/hung", "plugin %r: its call returned; sampling again", slot.name)
                if not problems:
                    self._warn.recovered(slot.name + "/values", "plugin %r: all values valid again", slot.name)
            future.set_result(values)
            if retired:
                _close_plugin(slot)

    # -- external plugins ---------------------------------------------------------------------------
    def on_external_sample(self, topic: str, payload: Any) -> None:
        """A message from local topic `ggdefender/custom-metrics` (dict for JSON messages, bytes otherwise)."""
        with self._lock:
            reserved = [m for slot in self._slots for m in slot.metrics]
            enabled = self.settings.enabled and not self._closed
        if enabled:
            self.external.ingest(topic, payload, reserved)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            slots, self._slots = self._slots, []
        for slot in slots:
            self._close_slot(slot)


def _close_plugin(slot: _Slot) -> None:
    try:
        slot.plugin.close()
    except Exception as exc:
        log.warning("plugin %r: close() failed: %s: %s", slot.name, type(exc).__name__, exc)
