"""Each part's verdict on its configuration section, and its last good section kept across restarts.

Every part validates its whole section before swapping it in (settings.py). This is the one place that
decides what happens around that: an accepted section is saved in the part's state folder, so that after a
restart with a section that is now rejected (e.g. a deployment MERGE of an invalid value) the part runs on the
last section it accepted rather than on built-in defaults (which could be JSON instead of CBOR, 300 s instead
of 20 s, or a wider Remediation allow-list); every verdict goes into the health document
(`configuration.<Section>`: accepted, reason, usingLastGood) and the log.
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any, Callable, Optional

from ggdefender import health, statefile

if TYPE_CHECKING:
    from ggdefender.ipc_port import IpcPort

log = logging.getLogger("ggdefender.config")

MAX_SAVED_BYTES = 1 << 20  # a section is small; a bigger one is not worth a last-good copy


def path_for(state_dir: str, section: str) -> str:
    return os.path.join(state_dir, f"last-good-{section}.json")


def _check_saved(obj: Any) -> dict:
    statefile.need(obj, dict, "last good configuration")
    if "value" not in obj:
        raise ValueError("last good configuration has no 'value'")
    statefile.need(obj["value"], (dict, type(None)), "last good configuration 'value'")
    statefile.need(obj.get("savedAt", ""), str, "last good configuration 'savedAt'")
    return obj


class LastGood:
    """The configuration section `section` of one part.

    `adopt(raw, apply)` calls the part's own `apply(raw)`, which validates the whole section and swaps it in, or
    raises ConfigError (ValueError) having changed nothing. Returns True when `raw` is now in use. On a
    rejection the part keeps what it runs; when it runs nothing yet (start-up), the saved last good section is
    applied instead. `in_use` says whether any section was applied; when not, the part uses its own
    start-up fallback (built-in defaults, or refusing work as Remediation does)."""

    def __init__(self, ipc: Optional[IpcPort], section: str, state_dir: Optional[str], *, note: Optional[str] = None):
        self.ipc = ipc
        self.section = section
        self.note = note  # said with an accepted verdict, e.g. when the part applies it only at its next start
        self.path = path_for(state_dir, section) if state_dir else None
        self.in_use = False
        self.error: Optional[str] = None  # why the last section was rejected (None after an accepted one)
        self._saved: Any = _UNSET  # what the file holds, to write only on change

    def adopt(self, raw: Any, apply: Callable[[Any], Any]) -> bool:
        try:
            apply(raw)
        except ValueError as exc:  # ConfigError and the validators' ValueErrors
            self.error = str(exc) or type(exc).__name__
            return self._rejected(raw, apply)
        self.in_use, self.error = True, None
        self._save(raw)
        health.configuration(self.ipc, self.section, True, self.note)
        return True

    def parse(self, raw: Any, parse: Callable[[Any], Any]) -> Any:
        """For a part whose settings are one parsed value: the value now in use (from `raw`, else the saved last
        good section), or None when neither is valid."""
        parsed: list = []
        self.adopt(raw, lambda section: parsed.append(parse(section)))
        return parsed[-1] if parsed else None

    def _rejected(self, raw: Any, apply: Callable[[Any], Any]) -> bool:
        if self.in_use:
            log.error("%s configuration rejected, keeping the last good one: %s", self.section, self.error)
            health.configuration(self.ipc, self.section, False, self.error, using_last_good=True)
            return False
        saved = self._load()
        if saved is not None:
            try:
                apply(saved["value"])
            except ValueError as exc:  # accepted once, but this version's rule refuses it
                log.error("%s: the last good configuration saved at %s is not valid either (%s)",
                          self.section, saved.get("savedAt") or "?", exc)
            else:
                self.in_use = True
                log.error("%s configuration rejected: %s; using the last good configuration (saved %s) instead",
                          self.section, self.error, saved.get("savedAt") or "earlier")
                health.configuration(self.ipc, self.section, False, self.error, using_last_good=True)
                return False
        log.error("%s configuration rejected and there is no last good one: %s", self.section, self.error)
        health.configuration(self.ipc, self.section, False, self.error, using_last_good=False)
        return False

    # -- the saved section ---------------------------------------------------------------------------------------
    def _load(self) -> Optional[dict]:
        if self.path is None:
            return None
        saved = statefile.read_json(self.path, _check_saved, lambda: None,
                                    what=f"last good {self.section} configuration", log=log)
        if saved is not None:
            self._saved = saved["value"]
        return saved

    def _save(self, raw: Any) -> None:
        if self.path is None:
            return
        value = raw if isinstance(raw, dict) or raw is None else None
        if self._saved is _UNSET:
            current = statefile.read_json(self.path, _check_saved, lambda: None,
                                          what=f"last good {self.section} configuration", log=log)
            self._saved = current["value"] if current is not None else _UNSET
        if self._saved is not _UNSET and self._saved == value:
            return
        try:
            data = json.dumps({"section": self.section, "savedAt": health.now_iso(), "value": value},
                              separators=(",", ":"), allow_nan=False).encode()
            if len(data) > MAX_SAVED_BYTES:
                log.warning("%s configuration over %d bytes; not kept as the last good one", self.section,
                            MAX_SAVED_BYTES)
                return
            statefile.atomic_write(self.path, data)
            self._saved = value
        except (OSError, TypeError, ValueError) as exc:  # a full disk must not turn an accepted section into a failure
            log.warning("%s: could not save the last good configuration to %s: %s", self.section, self.path, exc)


_UNSET = object()
