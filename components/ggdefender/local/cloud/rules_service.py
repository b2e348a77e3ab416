"""AWS IoT rules reached through Basic Ingest, offline: a sink keeping what each rule receives.

A message on `$aws/rules/<rule>/<rest>` goes to the named topic rule only (Basic Ingest; no subscriber sees
it). Here each one is appended to `<root>/cloud/rules/<rule>/messages.jsonl`, one object per line:
`{"receivedAt", "topic", "payloadBase64"}` (the exact bytes), plus `"json"` when the payload is JSON. This is
where `Collector.Export` reports land under `ggdefender local` (docs/fleet.md), for users and for the fleet tools.
No SQL is evaluated: every message is kept, as a `SELECT * FROM` rule with a store action would.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

from ggdefender import topics

from .services import Declaration

log = logging.getLogger("ggdefender.local.cloud.rules_service")

TOPIC_FILTER = topics.BASIC_INGEST_PREFIX + "#"
MAX_RULES = 16  # rule folders created; the topic names the rule, so a component could invent many
MESSAGES_FILE = "messages.jsonl"
_RULE_NAME = re.compile(topics.RULE_NAME_PATTERN)  # also keeps "..", "/" out of <root>/cloud/rules/<rule>/


def messages_path(root_dir: Any, rule: str) -> Path:
    return Path(root_dir) / "cloud" / "rules" / rule / MESSAGES_FILE


class RulesService:
    """The offline Basic Ingest rules sink (a cloud service of `ggdefender local`)."""

    def __init__(self, core: Any, root_dir: Path, view: Any = None):
        self.root_dir = Path(root_dir)
        self.counts: dict = {}  # rule -> messages kept since the core started
        self._lock = threading.Lock()
        self._unsubscribe = core.subscribe_iot(TOPIC_FILTER, self._on_message)

    def _on_message(self, topic: str, payload: bytes, source: str) -> None:
        rule = topic[len(topics.BASIC_INGEST_PREFIX):].partition("/")[0]
        if not _RULE_NAME.fullmatch(rule) or len(rule) > topics.RULE_NAME_MAX:
            log.warning("message on %r dropped: %r is not a topic rule name", topic[:300], rule[:200])
            return
        line: dict = {"receivedAt": time.time(), "topic": topic, "payloadBase64": base64.b64encode(payload).decode()}
        try:
            line["json"] = json.loads(payload)
        except ValueError:
            pass  # CBOR or other bytes: payloadBase64 has them
        with self._lock:
            if rule not in self.counts and len(self.counts) >= MAX_RULES:
                log.warning("message for rule %s dropped: over %d rules", rule, MAX_RULES)
                return
            path = messages_path(self.root_dir, rule)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(line, separators=(",", ":")) + "\n")
            self.counts[rule] = self.counts.get(rule, 0) + 1

    def control_commands(self) -> dict:
        return {"rules-messages": lambda args: {"counts": dict(self.counts)}}

    def close(self) -> None:
        self._unsubscribe()


DECLARATION = Declaration("rules", RulesService,
                          "AWS IoT rules via Basic Ingest: keeps what arrives on $aws/rules/<rule>/... per rule")
