"""What a metric source module says about itself: its `DECLARATION`, next to the source's code."""

from __future__ import annotations

import dataclasses
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Declaration:
    name: str  # the collector's `Source` setting names it
    source: Callable[..., object]  # source(**options) -> an object with .sample(groups) -> data.Sample
    available: Callable[[], bool]  # can it run on this host
    # when to choose it, in a few words: the `Source` row of docs/configuration.md shows it
    # (checked by tests/unit/test_metric_sources_declared.py)
    summary: str
    preference: int  # `Source: auto` tries the available sources in this order (1 = first)

    def __post_init__(self):
        if self.preference < 1:
            raise ValueError(f"{self.name}: preference {self.preference} must be >= 1")
