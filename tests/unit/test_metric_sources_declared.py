"""The metric sources declare themselves (each module of collector/sources/ with a `DECLARATION`); the
collector's `Source` setting and its row in docs/configuration.md name exactly those (plus `auto`), each with
its declared summary, so a new source cannot be left unselectable or undocumented."""

import dataclasses
import os
import re

import pytest

from ggdefender.collector import config, sources
from ggdefender.settings import ConfigError

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs")


def test_collector_source_setting_accepts_exactly_the_registered_sources():
    for name in sources.names():
        assert config.parse({"Source": name}).source == name
    with pytest.raises(ConfigError) as err:
        config.parse({"Source": "no-such-source"})
    offered = re.search(r"expected one of (.*), got", str(err.value)).group(1).split(", ")
    assert offered == ["auto"] + sources.names()


def test_docs_name_every_registered_source():
    with open(os.path.join(DOCS, "configuration.md"), encoding="utf-8") as fh:
        row = next(line for line in fh if line.startswith("| `Source` |"))
    assert set(re.findall(r"`([a-z]+)`", row)) - {"Source"} == {"auto", *sources.names()}
    for name, summary in sources.summaries().items():
        assert f"`{name}` ({summary})" in row, f"docs/configuration.md's `Source` row should say `{name}` ({summary})"


def test_auto_prefers_procfs_and_falls_back_to_psutil(monkeypatch):
    from ggdefender.collector.sources import procfs, psutil_source

    assert sources.names() == ["procfs", "psutil"]
    if procfs.DECLARATION.available():
        assert type(sources.pick_source("auto")) is procfs.ProcfsSource
    registry = dict(sources._registry())
    registry["procfs"] = dataclasses.replace(registry["procfs"], available=lambda: False)
    monkeypatch.setattr(sources, "_registry", lambda: registry)
    assert type(sources.pick_source("auto")) is psutil_source.PsutilSource
    assert type(sources.pick_source("procfs")) is procfs.ProcfsSource  # named: no availability check
