"""The same probe component on nucleus lite and under `ggdefender local`: every IPC outcome that differs must be
a difference docs/local-core.md lists ("Differences from the real nuclei"), with the reason. A new difference
fails this test until `ggdefender local` is aligned with the real nucleus or the difference is documented."""

import json
import os
import re
import sys
from pathlib import Path

import pytest

from lite_session import PROBE, REPO, wait_for_outcomes

pytestmark = pytest.mark.integration

from ggdefender.local.ui import harness
from ggdefender.local.nucleus.lifecycle import CORE_ENV  # noqa: E402  (what `ggdefender local` sets itself)

# probe call -> (outcome on nucleus lite, outcome under `ggdefender local`); each is a row of the table in
# docs/local-core.md, "Differences from the real nuclei"
KNOWN = {
    # lite sets GG_ROOT_CA_PATH (no CA offline) and only the _FOR_COMPONENT socket variable (local sets both, as
    # the Java nucleus does)
    "core-environment": (
        'ok ["AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_DEFAULT_REGION", '
        '"AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", "AWS_IOT_THING_NAME", "AWS_REGION", "GGC_VERSION", '
        '"GG_ROOT_CA_PATH", "SVCUID"]',
        'ok ["AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_DEFAULT_REGION", "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH", '
        '"AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", "AWS_IOT_THING_NAME", "AWS_REGION", '
        '"GGC_VERSION", "SVCUID"]'),
    # lite keeps YAML scalars of a DefaultConfiguration as strings
    "get-own-number": ('ok {"Number": "5"}', 'ok {"Number": 5}'),
    # this harness runs lite without gghealthd (it needs systemd): UpdateState fails there
    "update-state-running": ("ServiceError", "ok"),
    # lite's ggipcd takes IPC messages of at most 10,000 bytes and drops the connection over that
    "publish-iot-7400-bytes": ("connection dropped", "ok"),
    "publish-iot-16000-bytes": ("not tried: connection gone", "ok"),
}
DOC = REPO / "docs" / "local-core.md"


def test_the_probe_gets_the_same_answers_from_both_cores_but_the_documented_differences(lite, tmp_path,
                                                                                         monkeypatch):
    on_lite = lite.probe_outcomes()
    monkeypatch.setenv("GGDEFENDER_PYTHON", sys.executable)
    with harness.LocalCore(tmp_path / "local", thing=lite.thing) as core:
        core.deploy(PROBE / "recipes", PROBE / "artifacts", {"ggdefender.LiteProbe": "1.0.0"})
        on_local = wait_for_outcomes(core.work_dir("ggdefender.LiteProbe") / "outcomes.json", 60,
                                     lambda: core.log_text("ggdefender.LiteProbe"))
    assert on_lite.keys() == on_local.keys()
    # `ggdefender local` passes its own environment on (as the Java nucleus does; the lite harness starts
    # components with a clean one): what the test process already has is not the core's doing
    names = json.loads(on_local["core-environment"][len("ok "):])
    on_local["core-environment"] = "ok " + json.dumps([n for n in names if n not in os.environ or n in CORE_ENV])
    differences = {name: (on_lite[name], on_local[name]) for name in on_lite if on_lite[name] != on_local[name]}
    assert differences == KNOWN, f"lite vs local: {differences}"
    section = DOC.read_text().split("## Differences from the real nuclei", 1)
    assert len(section) == 2, f"{DOC} has no 'Differences from the real nuclei' section"
    for name in KNOWN:
        assert re.search(rf"`{re.escape(name)}`", section[1]), f"{name} is not listed in {DOC}"
