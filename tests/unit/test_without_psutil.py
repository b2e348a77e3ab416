"""The component installs and runs where psutil cannot be installed (no wheel for armv7l): nothing it loads at
start needs psutil, and `ggdefender collect --once` gives a valid report with every built-in custom metric.
psutil is hidden from the child interpreter by a package of that name on PYTHONPATH whose import fails."""

import json
import os
import subprocess
import sys

import pytest

from ggdefender.collector.schema import validate_report
from ggdefender.devtools import build
from ggdefender.plugins.builtin import BUILTINS

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="psutil is optional on Linux only")


@pytest.fixture
def hidden_psutil_env(tmp_path):
    shim = tmp_path / "hide" / "psutil"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError(\"No module named 'psutil' (hidden by the test)\")\n")
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(shim.parent), *sys.path]))


# every module the artifact ships (everything but build.EXCLUDED_DIRS), imported in one interpreter
IMPORT_ALL = """
import importlib, json, pkgutil, sys
import ggdefender
excluded = set(json.loads(sys.argv[1]))
names = [m.name for m in pkgutil.walk_packages(ggdefender.__path__, "ggdefender.")
         if m.name.split(".")[1] not in excluded and not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
try:
    import psutil
except ImportError:
    pass
else:
    raise SystemExit("psutil was not hidden")
from ggdefender.remediation import operations
print(json.dumps({"imported": len(names), "unavailable": sorted(operations.unavailable())}))
"""


def test_every_shipped_module_imports_without_psutil(hidden_psutil_env):
    excluded = sorted(build.EXCLUDED_DIRS)
    out = subprocess.run([sys.executable, "-c", IMPORT_ALL, json.dumps(excluded)], env=hidden_psutil_env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["imported"] > 50  # the walk really went through the package
    assert result["unavailable"] == ["kill-process", "stop-listener"]


def test_collect_once_without_psutil_gives_a_valid_report_with_the_builtin_metrics(hidden_psutil_env, tmp_path):
    out = subprocess.run([sys.executable, "-m", "ggdefender", "collect", "--once", "--network-window", "1"],
                         env=hidden_psutil_env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert validate_report(report) == []
    assert set(report["custom_metrics"]) == set(BUILTINS)
    assert report["custom_metrics"]["process_count"][0]["number"] >= 1
    assert set(report["metrics"]) == {"listening_tcp_ports", "listening_udp_ports", "tcp_connections",
                                      "network_stats"}
    assert "psutil" not in out.stderr  # no plugin or source failed for want of it


def test_source_psutil_is_refused_by_the_collector_section_where_psutil_is_missing(hidden_psutil_env):
    from ggdefender.collector import config

    assert config.parse({"Source": "psutil"}).source == "psutil"  # installed here
    code = ("from ggdefender.collector import config\n"
            "assert config.parse({'Source': 'auto'}).source == 'auto'\n"
            "config.parse({'Source': 'psutil'})\n")
    out = subprocess.run([sys.executable, "-c", code], env=hidden_psutil_env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert "ConfigError: Collector.Source: psutil is not available on this system; use auto" in out.stderr, out.stderr
