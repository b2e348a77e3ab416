"""Install.IndexUrl end to end under `ggdefender local`: a deployment that sets it makes the recipe's real install
step install the pinned requirements from that package index instead of the wheels artifact.

The index is the build's own wheels for this machine laid out as a PEP 503 index and served over HTTP on
127.0.0.1 (nothing leaves the machine). The install step runs with a clean interpreter (none of the pins), so it
must create the venv, and with a different GGDEFENDER_INDEX_URL in the core's environment, which the recipe's
Setenv must override: the deployed configuration decides. Then the component runs from that venv and its
reports are accepted by the offline Device Defender.
"""

import json
import subprocess
import sys
import sysconfig
import zipfile

import pytest

import loopback_index
from component_build import build_copy
from ggdefender.devtools import wheels as w
from ggdefender.local.ui import harness

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Greengrass components run on Linux")]

NAME = "ggdefender.Defender"
THING = "indexThing"


def test_a_deployment_setting_install_indexurl_installs_from_that_index(tmp_path, monkeypatch):
    machine = sysconfig.get_platform().split("-", 1)[1]
    arch = {p.machine: p.greengrass for p in w.PLATFORMS}.get(machine)
    if arch is None:
        pytest.skip(f"the build makes no wheels for {machine}")
    built = build_copy(tmp_path / "project")
    unpacked = tmp_path / "wheels-zip"
    with zipfile.ZipFile(built.wheel_artifacts[arch]) as zf:
        zf.extractall(unpacked)
    loopback_index.layout(tmp_path / "index", sorted(unpacked.rglob("*.whl")))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "clean")], check=True, timeout=60)
    monkeypatch.setenv("GGDEFENDER_PYTHON", str(tmp_path / "clean" / "bin" / "python"))
    monkeypatch.setenv("GGDEFENDER_INDEX_URL", "http://127.0.0.1:9/not-this-one")  # the nucleus's environment

    with loopback_index.serve(tmp_path / "index", tmp_path / "index.log") as (index, requests), \
            harness.LocalCore(root=tmp_path / "core", thing=THING) as core:
        cap = core.capture_iot(f"$aws/things/{THING}/#")
        health = core.capture_iot(f"ggdefender/things/{THING}/health")
        core.deploy(built.recipe.parent, built.artifact.parents[2], {built.name: built.version},
                    update_config={NAME: {"MERGE": {"Install": {"IndexUrl": index},
                                                    "Collector": {"DevelopmentSampleIntervalSeconds": "1",
                                                                  "StartJitterPercent": "0"}}}})
        try:
            core.wait_for_state(NAME, "RUNNING", timeout=300)
            log = core.wait_for_log(NAME, f"from the package index {index}")
            venv_python = core.work_dir(NAME) / "venv" / "bin" / "python"
            assert (core.work_dir(NAME) / "ggdefender-python").read_text() == f"{venv_python}\n"
            served = requests.read_text()
            assert "GET /simple/awscrt/" in served and "GET /simple/cbor2/" in served, served[-2000:]
            assert "not-this-one" not in log
            # the component runs from that venv: its reports are accepted
            cap.wait_for(lambda m: any(t.endswith("/defender/metrics/json/accepted") for t, *_ in m), timeout=120)
            # process A's verdict on the section: accepted, applying at the next install
            docs = health.wait_for(lambda m: any(_install_verdict(p) for _, p, *_ in m), timeout=60)
            verdict = next(_install_verdict(p) for _, p, *_ in docs if _install_verdict(p))
            assert verdict["accepted"] is True and "next install" in verdict["reason"]
        except BaseException:
            print(core.log_text(NAME)[-8000:])
            raise


def _install_verdict(payload):
    return (json.loads(payload).get("configuration") or {}).get("Install")
