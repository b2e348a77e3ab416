"""The defaults in code (defaults.py): merged under the live configuration where every part reads it, agreeing
with each part's own parser and with docs/configuration.md."""

import re
from pathlib import Path

import pytest
import yaml

from ggdefender import defaults
from ggdefender.collector import config as collector_config
from ggdefender.detect import config as detect_config
from ggdefender.ipc import Ipc
from ggdefender.ipc_client import ResourceNotFoundError
from ggdefender.local.nucleus.config_updates import apply_update
from ggdefender.plugins import host as plugin_host
from ggdefender.plugins.registry import discover
from ggdefender.remediation import config as remediation_config
from ggdefender.supervisor import section as supervisor_section

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "ggdefender.Defender.yaml"
DOC = ROOT / "docs" / "configuration.md"


def test_a_partial_merge_keeps_every_other_default():
    live = {"Collector": {"ReportFormat": "cbor"}, "Detect": {"Statistics": {"HistoryDays": "7"}}}
    got = defaults.with_defaults([], live)
    assert got["Collector"]["ReportFormat"] == "cbor"
    assert got["Collector"]["SampleIntervalSeconds"] == "300" and got["Supervisor"] == defaults.DEFAULTS["Supervisor"]
    assert got["Detect"]["Statistics"] == {**defaults.DEFAULTS["Detect"]["Statistics"], "HistoryDays": "7"}
    assert defaults.DEFAULTS["Collector"]["ReportFormat"] == "json"  # never changed by a merge


def test_lists_and_wrong_types_replace_the_default_so_the_parts_validator_sees_them():
    assert defaults.with_defaults(["Collector"], {"Metrics": ["tcp_connections"]})["Metrics"] == ["tcp_connections"]
    assert defaults.with_defaults(["Collector"], "oops") == "oops"
    assert defaults.with_defaults(["Collector", "MaxListSize"], None) == "1000"
    assert defaults.with_defaults(["NoSuchSection"], None) is None
    assert defaults.with_defaults(["accessControl"], {"a": 1}) == {"a": 1}


def test_reset_of_a_key_returns_to_the_code_default():
    """RESET puts a key back to the recipe's default or removes it (the recipe has none now); the merge then
    answers the code default. apply_update is the local core's RESET/MERGE, aligned with the nucleus."""
    recipe_default = yaml.safe_load(RECIPE.read_text())["ComponentConfiguration"]["DefaultConfiguration"]
    live = apply_update(recipe_default, recipe_default, {"MERGE": {"Collector": {"SampleIntervalSeconds": "900"}}})
    assert defaults.with_defaults(["Collector"], live["Collector"])["SampleIntervalSeconds"] == "900"
    live = apply_update(live, recipe_default, {"RESET": ["/Collector/SampleIntervalSeconds"]})
    assert defaults.with_defaults(["Collector"], live.get("Collector"))["SampleIntervalSeconds"] == "300"
    assert live["accessControl"] == recipe_default["accessControl"]


class _Client:
    def __init__(self, answers):
        self.answers = answers

    def get_configuration(self, component, key_path):
        value = self.answers[(component, tuple(key_path))]
        if value is ResourceNotFoundError:
            raise ResourceNotFoundError("no such key")
        return value


def test_ipc_get_config_is_the_one_merge_point():
    client = _Client({(None, ("Collector",)): {"ReportFormat": "cbor"}, (None, ("Supervisor",)): ResourceNotFoundError,
                      ("other.Component", ("Collector",)): {"ReportFormat": "cbor"}})
    ipc = Ipc(client_factory=lambda: client)
    got = ipc.get_config(["Collector"])
    assert got == {**defaults.DEFAULTS["Collector"], "ReportFormat": "cbor"}
    assert ipc.get_config(["Supervisor"]) == defaults.DEFAULTS["Supervisor"]  # absent: the code defaults
    # another component's configuration is what the nucleus says, nothing added
    assert ipc.get_config(["Collector"], component="other.Component") == {"ReportFormat": "cbor"}


def test_each_parts_parser_reads_the_code_defaults_as_its_own_fallbacks():
    """The parsers' built-in fallbacks (for a section a part gets empty) and defaults.py must not drift."""
    d = defaults.DEFAULTS
    assert collector_config.parse(d["Collector"]) == collector_config.parse({})
    assert supervisor_section.parse_settings(d["Supervisor"]) == supervisor_section.parse_settings({})
    assert remediation_config.parse(d["Remediation"]) == remediation_config.parse({})
    assert detect_config.parse(d["Detect"]) == detect_config.parse({})
    registry = discover()
    with_defaults, empty = plugin_host.parse_section(d["Plugins"], registry), plugin_host.parse_section({}, registry)
    assert with_defaults == empty
    assert [p.fingerprint for p in with_defaults.plugins] == [p.fingerprint for p in empty.plugins]


def _doc_tables() -> dict:
    """Section -> {key: default cell} from the `| `Key` | Default | Meaning |` tables of docs/configuration.md."""
    tables = {}
    for match in re.finditer(r"^## (\w+)\n(.*?)(?=^## |\Z)", DOC.read_text(), re.M | re.S):
        rows = {}
        for line in match.group(2).splitlines():
            row = re.match(r"^\| `([^`]+)` \| ([^|]*) \|", line)
            if row:
                rows.setdefault(row.group(1), row.group(2).strip())
        tables[match.group(1)] = rows
    return tables


def _flat(section: dict, prefix: str = ""):
    for key, value in section.items():
        if isinstance(value, dict) and value and key != "Builtins":
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield prefix + key, value


def _same(documented, value) -> bool:
    """A documented YAML literal against a default: numbers are kept as strings in the code (Greengrass
    turns numbers into floats), so `300` in the doc is "300"."""
    if isinstance(value, list):
        return isinstance(documented, list) and len(documented) == len(value) and \
            all(_same(a, b) for a, b in zip(documented, value))
    if isinstance(value, str) and isinstance(documented, (int, float)) and not isinstance(documented, bool):
        return str(documented) == value
    return documented == value


@pytest.mark.parametrize("section", list(defaults.DEFAULTS))
def test_docs_list_every_default_with_its_value(section):
    rows = _doc_tables()[section]
    for key, value in _flat(defaults.DEFAULTS[section]):
        if key == "Builtins":  # one row per plugin pattern; each built-in's name is in the plugin tables
            doc = DOC.read_text()
            assert all(f"`{name}`" in doc for name in value), "a built-in plugin is missing from the doc"
            continue
        assert key in rows, f"docs/configuration.md, {section}: no row for `{key}`"
        literal = re.match(r"^`([^`]*)`", rows[key])
        assert literal, f"{section}.{key}: the Default cell should start with the value in backticks: {rows[key]!r}"
        assert _same(yaml.safe_load(literal.group(1)), value), \
            f"{section}.{key}: the doc says {literal.group(1)}, defaults.py has {value!r}"
