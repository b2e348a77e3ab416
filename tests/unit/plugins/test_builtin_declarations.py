"""Each built-in plugin declares itself next to its code (plugins/builtin/<module>.py `DECLARATION`); every
list of built-ins is derived from those, and what must stay a literal (defaults.py, the user docs) equals
them here. A docs test that fails prints the block to paste."""

import os
import re
import sys

import pytest
import yaml

from ggdefender import defaults
from ggdefender.plugins.builtin import BUILTINS, DECLARATIONS
from ggdefender.plugins.contract import HOST_KEYS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BEGIN = "<!-- built-in plugins: generated from each plugin's DECLARATION"
END = "<!-- end of built-in plugins -->"


def _doc(name: str) -> str:
    with open(os.path.join(ROOT, "docs", name), encoding="utf-8") as fh:
        return fh.read()


def _number(value) -> str:
    return f"{value:g}"


def _config_block(decl) -> str:
    """The YAML a user writes for this built-in: the host's keys (HOST_KEYS) at their defaults, then the
    plugin's declared sample configuration."""
    lines = ["Plugins:", "  Builtins:", f"    {decl.name}:",
             f"      {'Enabled: true':<24}# false turns this metric off",
             f"      {'IntervalSeconds: ' + _number(decl.plugin.default_interval):<24}"
             "# seconds between samples; 0 = sample for every report"]
    lines += ["      " + line for line in decl.sample_config.splitlines()]
    return "```yaml\n" + "\n".join(lines) + "\n```\n"


def render() -> str:
    """docs/plugins.md's generated block, from the declarations."""
    out = [BEGIN + " (components/ggdefender/plugins/builtin/); edit those, not this block -->\n\n",
           "| Metric | Type (`--metric-type`) | Unit | What it measures |\n|---|---|---|---|\n"]
    for decl in DECLARATIONS:
        cls = decl.plugin
        out.append(f"| `{cls.name}` | `{cls.value_type.metric_type}` | {cls.unit} | {cls.description} |\n")
    for decl in DECLARATIONS:
        summary = decl.plugin.description
        out.append(f"\n### `{decl.name}`\n\n{summary[:1].upper()}{summary[1:]}.\n{decl.docs}\n{_config_block(decl)}")
    out.append("\n" + END)
    return "".join(out)


def test_declarations_give_the_report_order_and_every_builtin_once():
    assert [d.report_order for d in DECLARATIONS] == sorted(d.report_order for d in DECLARATIONS)
    assert list(BUILTINS) == [d.name for d in DECLARATIONS]
    for decl in DECLARATIONS:  # test_plugin_builtins checks each has a summary and a unit
        cls = decl.plugin
        assert "\n" not in cls.description, cls.name
        assert not cls.description.endswith("."), f"{cls.name}: the summary is a phrase (the docs add the stop)"


def test_sample_config_is_the_plugins_own_options_at_their_defaults():
    for decl in DECLARATIONS:
        sample = yaml.safe_load(decl.sample_config) or {}
        assert isinstance(sample, dict), decl.name
        assert not set(sample) & HOST_KEYS, f"{decl.name}: the host's keys are rendered from the class"
        assert sample == dict(decl.plugin.options), \
            f"{decl.name}: sample_config {sample!r} differs from the class's options {dict(decl.plugin.options)!r}"


def test_defaults_py_lists_the_builtins_in_report_order_with_the_declared_defaults():
    builtins = defaults.DEFAULTS["Plugins"]["Builtins"]
    assert list(builtins) == list(BUILTINS), "defaults.py Plugins.Builtins must list the built-ins in report order"
    for decl in DECLARATIONS:
        declared = {"Enabled": True, "IntervalSeconds": decl.plugin.default_interval, **decl.plugin.options}
        for key, value in builtins[decl.name].items():
            assert key in declared and declared[key] == value, f"defaults.py Plugins.Builtins.{decl.name}.{key} " \
                f"= {value!r}, the declaration says {declared.get(key)!r}"


def test_plugins_md_block_is_generated_from_the_declarations():
    text = _doc("plugins.md")
    assert BEGIN in text and END in text, f"docs/plugins.md has lost its generated block ({BEGIN!r})"
    found = text[text.index(BEGIN):text.index(END) + len(END)]
    assert found == render(), "docs/plugins.md differs from the declarations; paste this block:\n\n" + render()


def test_plugins_md_registers_each_builtin_with_its_metric_type():
    text = _doc("plugins.md")
    for name, cls in BUILTINS.items():
        assert re.search(rf"--metric-name {name} +--metric-type {re.escape(cls.value_type.metric_type)} ", text), \
            f"docs/plugins.md: no `aws iot create-custom-metric --metric-name {name} " \
            f"--metric-type {cls.value_type.metric_type}` line"


def test_configuration_md_option_table_equals_the_declared_options():
    rows = re.findall(r"^\| `([a-z_]+)` \| `(\w+)` \| `([^`]*)` \|", _doc("configuration.md"), re.MULTILINE)
    documented = {(plugin, option): yaml.safe_load(default) for plugin, option, default in rows if plugin in BUILTINS}
    declared = {(name, option): default for name, cls in BUILTINS.items() for option, default in cls.options.items()}
    assert documented == declared, "docs/configuration.md's built-in plugin options table differs from the plugins"


@pytest.mark.parametrize("modules, why", [
    ({"twice_a": ("cpu_usage", "CpuUsage", 1), "twice_b": ("cpu_usage", "CpuUsage", 9)},
     "ggdefender.plugins.builtin: 'cpu_usage' is declared twice, by ggdefender.plugins.builtin.twice_a and "
     "ggdefender.plugins.builtin.twice_b"),
    ({"twice_a": ("cpu_usage", "CpuUsage", 1), "twice_b": ("memory_usage", "MemoryUsage", 1)},
     "ggdefender.plugins.builtin: order 1 is declared twice, by ggdefender.plugins.builtin.twice_a and "
     "ggdefender.plugins.builtin.twice_b"),
])
def test_a_name_or_report_order_declared_twice_is_refused(tmp_path, monkeypatch, modules, why):
    from ggdefender.plugins import builtin

    (tmp_path / "helper_only.py").write_text("")  # a module without DECLARATION is not a built-in
    for module, (source, cls, order) in modules.items():
        (tmp_path / f"{module}.py").write_text(
            "from ggdefender.plugins.builtin.declaration import Declaration\n"
            f"from ggdefender.plugins.builtin.{source} import {cls}\n"
            f"DECLARATION = Declaration({cls}, report_order={order}, sample_config='')\n")
    monkeypatch.setattr(builtin, "__path__", [str(tmp_path)])
    try:
        with pytest.raises(RuntimeError) as err:
            builtin._declarations()
    finally:
        for module in [*modules, "helper_only"]:  # imported from tmp_path: not left for other tests
            sys.modules.pop(f"{builtin.__name__}.{module}", None)
    assert str(err.value) == why
