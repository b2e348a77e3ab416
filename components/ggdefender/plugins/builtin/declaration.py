"""What a built-in plugin module says about itself: its `DECLARATION`, next to the plugin's code.

The metric's name, type, unit and one-line summary are the plugin class's own attributes (`name`,
`value_type`, `unit`, `description`); the declaration adds what only a built-in has: its place in the
report and its user documentation. Every list of built-ins is derived from these (builtin/__init__.py);
docs/plugins.md and the defaults are checked against them (tests/unit/plugins/test_builtin_declarations.py).
"""

from __future__ import annotations

import dataclasses
from typing import Type

from ..contract import Plugin


@dataclasses.dataclass(frozen=True)
class Declaration:
    plugin: Type[Plugin]
    report_order: int  # its place among the built-ins in reports and in every list of them (1 = first)
    # telegraf-style: the YAML a user puts under Plugins.Builtins.<name>, every key at its default, with
    # comments saying what each does (checked to equal the class's defaults and defaults.py)
    sample_config: str
    docs: str = ""  # a few lines of Markdown for docs/plugins.md beyond the one-line summary

    @property
    def name(self) -> str:
        return self.plugin.name

    def __post_init__(self):
        if self.report_order < 1:
            raise ValueError(f"{self.plugin.name}: report_order {self.report_order} must be >= 1")
