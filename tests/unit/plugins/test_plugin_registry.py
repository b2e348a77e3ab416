"""Entry-point discovery: a package on sys.path adds plugins; clashes and broken entry points are reported."""

import logging
import sys

import pytest

from ggdefender.plugins.builtin import BUILTINS
from ggdefender.plugins.host import PluginHost
from ggdefender.plugins.registry import discover

PLUGIN_MODULE = '''
from ggdefender.plugins.contract import Plugin, ValueType


class Sensors(Plugin):
    name = "acme_sensors"
    value_type = ValueType.NUMBER_LIST
    unit = "celsius"
    description = "fixture sensor temperatures"
    options = {"Offset": 0}

    def configure(self, options):
        self.offset = options["Offset"]

    def sample(self):
        return [40 + self.offset, 41 + self.offset]


class Clash(Sensors):
    name = "cpu_usage"


NOT_A_PLUGIN = object()
'''


def _dist(root, dist_name, module, entry_points):
    info = root / f"{dist_name.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: 1.0\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points)
    (info / "entry_points.txt").write_text(f"[ggdefender.plugins]\n{lines}\n")


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Two fake installed distributions (dist-info directories) on sys.path, like pip would leave them."""
    pkg = tmp_path / "acme_ggd_plugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(PLUGIN_MODULE)
    (pkg / "broken.py").write_text("raise ImportError('needs libsensors')\n")
    _dist(tmp_path, "acme-ggd-plugins", "acme_ggd_plugins", [
        ("acme_sensors", "acme_ggd_plugins:Sensors"),
        ("cpu_usage", "acme_ggd_plugins:Clash"),
        ("acme_broken", "acme_ggd_plugins.broken:Sensors"),
        ("acme_object", "acme_ggd_plugins:NOT_A_PLUGIN"),
        ("acme_renamed", "acme_ggd_plugins:Sensors"),
    ])
    _dist(tmp_path, "zeta-plugins", "acme_ggd_plugins", [("acme_sensors", "acme_ggd_plugins:Sensors")])
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("acme_ggd_plugins")]:
        del sys.modules[name]


def test_discovers_installed_plugin_and_reports_each_problem(installed, caplog):
    with caplog.at_level(logging.ERROR, logger="ggdefender.plugins"):
        registry = discover()
    assert registry.builtins == BUILTINS
    assert list(registry.installed) == ["acme_sensors"]
    assert registry.origins["acme_sensors"] == "acme-ggd-plugins 1.0 (acme_ggd_plugins:Sensors)"
    problems = "\n".join(registry.problems)
    assert "'cpu_usage' from acme-ggd-plugins 1.0 (acme_ggd_plugins:Clash) clashes with the built-in" in problems
    assert "'acme_broken' from acme-ggd-plugins 1.0" in problems and "ImportError: needs libsensors" in problems
    assert "'acme_object'" in problems and "is not a subclass of ggdefender.plugins.contract.Plugin" in problems
    assert "'acme_renamed'" in problems and "differs from the plugin's name 'acme_sensors'" in problems
    assert "'acme_sensors' from zeta-plugins 1.0" in problems and "clashes with the one from acme-ggd-plugins" in problems
    assert len(registry.problems) == 5
    assert len([r for r in caplog.records if r.getMessage().startswith("plugin discovery:")]) == 5


def test_installed_plugin_reported_and_configurable(installed):
    registry = discover()
    names = list(BUILTINS)
    section = {"Builtins": {name: {"Enabled": False} for name in names},
               "Installed": {"acme_sensors": {"Offset": 10}}}
    host = PluginHost(section, registry=registry)
    try:
        assert host.collect() == {"acme_sensors": [{"number_list": [50, 51]}]}
        host.reconfigure({**section, "Installed": {"acme_sensors": {"Enabled": False}}})
        assert host.collect() == {}
        host.reconfigure({**section, "EnableInstalled": False, "Installed": {}})
        assert host.collect() == {}
    finally:
        host.close()


def test_configuring_a_plugin_this_device_lacks_is_a_warning_not_an_error(caplog):
    registry = discover()
    with caplog.at_level(logging.WARNING, logger="ggdefender.plugins"):
        host = PluginHost({"Builtins": {n: {"Enabled": False} for n in BUILTINS},
                           "Installed": {"not_here": {"Enabled": True}}}, registry=registry)
    try:
        assert "Plugins.Installed.not_here: no installed plugin of that name on this device; ignored" in caplog.text
        assert "Plugins configuration rejected" not in caplog.text
    finally:
        host.close()


HANGING_MODULE = '''
import time
from ggdefender.plugins.contract import Plugin, ValueType


class Forever(Plugin):
    name = "sleeps_forever"
    value_type = ValueType.NUMBER
    description = "never returns"

    def sample(self):
        while True:
            time.sleep(3600)
'''


def test_collect_once_with_a_pip_installed_plugin_that_sleeps_forever(tmp_path):
    """A real `ggdefender collect --once` process: the report comes out without the hung plugin, and the
    process exits (the hung call sits in a daemon thread, which never holds up interpreter exit)."""
    import json
    import os
    import subprocess

    (tmp_path / "forever_plugin.py").write_text(HANGING_MODULE)
    _dist(tmp_path, "forever-plugin", "forever_plugin", [("sleeps_forever", "forever_plugin:Forever")])
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"Plugins": {"TimeoutSeconds": 1,
                                              "Builtins": {"cpu_usage_per_core": {"Enabled": False}}}}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-m", "ggdefender", "collect", "--once", "--config", str(config)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    custom = json.loads(proc.stdout)["custom_metrics"]
    assert "sleeps_forever" not in custom and "cpu_usage" in custom and "cpu_usage_per_core" not in custom
    assert "plugin 'sleeps_forever': no sample within 1 s" in proc.stderr


def test_check_plugin_class_rules():
    from ggdefender.plugins.contract import Plugin, SampleError
    from ggdefender.plugins.registry import check_plugin_class

    class NoSample(Plugin):
        name = "no_sample"

    class Reserved(Plugin):
        name = "reserved"
        options = {"Enabled": True}

        def sample(self):
            return 1

    class BadName(Reserved):
        name = "aws:cpu"
        options = {}

    for cls, why in ((NoSample, "implements neither sample"), (Reserved, "reserved by the host"),
                     (BadName, "must not begin with 'aws:'")):
        with pytest.raises(SampleError, match=why):
            check_plugin_class(cls)


def test_installed_plugin_clashing_with_a_builtin_metric_is_disabled_not_the_builtins(installed, caplog):
    """A pip plugin producing `cpu_usage` under another name used to make every Plugins section invalid,
    defaults included, so the host ran with no plugins at all."""
    (installed / "acme_dup.py").write_text(
        "from acme_ggd_plugins import Sensors\n"
        "from ggdefender.plugins.contract import ValueType\n\n"
        "class Dup(Sensors):\n"
        "    name = 'acme_dup'\n"
        "    def metrics(self):\n"
        "        return {'memory_usage': ValueType.NUMBER}\n"
        "    def collect(self):\n"
        "        return {'memory_usage': 1}\n")
    _dist(installed, "acme-dup", "acme_dup", [("acme_dup", "acme_dup:Dup")])
    registry = discover()
    assert "acme_dup" in registry.installed
    builtins_off = {n: {"Enabled": False} for n in BUILTINS if n != "memory_usage"}
    with caplog.at_level(logging.ERROR, logger="ggdefender.plugins"):
        host = PluginHost({"Builtins": builtins_off}, registry=registry)
    try:
        assert "Plugins.Installed.acme_dup: metric 'memory_usage' is already produced by plugin 'memory_usage'" \
            in caplog.text
        assert "Plugins configuration rejected" not in caplog.text
        running = [slot.name for slot in host._slots]
        assert "memory_usage" in running and "acme_sensors" in running and "acme_dup" not in running
        assert set(host.collect()) == {"memory_usage", "acme_sensors"}
    finally:
        host.close()
