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

from ggdefender.local.ui import harness


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


def _stage_project(target: Path) -> Path:
    """A copy of what `ggdefender build` reads, so the build writes its greengrass-build/ under tmp."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "greengrass-build")
    target.mkdir(parents=True)
    for name in ("gdk-config.json", "pyproject.toml"):
        shutil.copy2(REPO / name, target / name)
    shutil.copytree(REPO / "recipes", target / "recipes", ignore=ignore)
    shutil.copytree(REPO / "components", target / "components", ignore=ignore)
    os.symlink(os.readlink(REPO / "recipe.yaml"), target / "recipe.yaml")
    return target


def _reports(captured) -> list:
    out = []
    for topic, payload, *_ in list(captured):
        if topic.endswith("/defender/metrics/json"):
            out.append(json.loads(payload))
    return out


def test_published_report_carries_seven_builtins_and_the_example_metric(tmp_path, monkeypatch):
    from ggdefender.devtools import build
    project = _stage_project(tmp_path / "project")
    build.build(project)
    out = project / "greengrass-build"
    assert (out / "recipes" / "ggdefender.ExamplePlugin-1.0.0.yaml").is_file()
    assert (out / "artifacts" / "ggdefender.ExamplePlugin" / "1.0.0" / "open_fds.py").is_file()
    # components run with this interpreter (it has the pinned requirements), as on a pre-provisioned device
    monkeypatch.setenv("GGDEFENDER_PYTHON", sys.executable)

    with harness.LocalCore(tmp_path / "core") as core:
        captured = core.capture_iot("$aws/things/+/defender/metrics/#")
        core.deploy(out / "recipes", out / "artifacts",
                    {"ggdefender.Defender": "1.0.0", "ggdefender.ExamplePlugin": "1.0.0"},
                    update_config={
                        "ggdefender.Defender": {"MERGE": {"Collector": {"DevelopmentSampleIntervalSeconds": "2"}}},
                        "ggdefender.ExamplePlugin": {"MERGE": {"IntervalSeconds": "1"}},
                    })

        def has_all(msgs) -> bool:
            return any("open_file_descriptors" in r.get("custom_metrics", {}) for r in _reports(msgs))

        try:
            captured.wait_for(has_all, timeout=120)
        except TimeoutError as exc:
            pytest.fail(f"{exc}\n--- Defender log:\n{core.log_text('ggdefender.Defender')[-4000:]}"
                        f"\n--- ExamplePlugin log:\n{core.log_text('ggdefender.ExamplePlugin')[-2000:]}")
        report = next(r for r in _reports(captured) if "open_file_descriptors" in r.get("custom_metrics", {}))
        cloud = core.service("DefenderService")
        accepted_ids = {a["reportId"] for a in cloud.accepted}
        rejected = list(cloud.rejected)

    custom = report["custom_metrics"]
    assert set(custom) == set(BUILTIN_TYPES) | {"open_file_descriptors"}, custom
    for name, value_type in {**BUILTIN_TYPES, "open_file_descriptors": "number"}.items():
        _check_shape(name, custom[name], value_type)
    assert 0 <= custom["cpu_usage"][0]["number"] <= 100
    assert custom["open_file_descriptors"][0]["number"] > 0
    assert custom["process_count"][0]["number"] >= 2  # at least the two ggdefender processes
    assert report["header"]["report_id"] in accepted_ids  # the offline Device Defender validated it too
    assert rejected == []
