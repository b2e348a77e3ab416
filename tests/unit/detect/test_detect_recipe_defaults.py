import copy
from pathlib import Path

import yaml

from ggdefender import defaults
from ggdefender.detect.config import parse

RECIPE = Path(__file__).resolve().parents[3] / "recipes" / "ggdefender.Defender.yaml"


def test_code_detect_defaults_parse_and_keep_mitigation_off():
    recipe = yaml.safe_load(RECIPE.read_text())
    cfg = parse(defaults.DEFAULTS["Detect"])
    assert cfg.enabled and cfg.profiles == () and cfg.mitigation.enabled is False
    assert cfg.stats.warmup == 30 and cfg.findings.account == "000000000000"
    # detect's mitigation requests and their results travel over the private relay, never the bus (docs/security.md)
    pubsub = recipe["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]["aws.greengrass.ipc.pubsub"]
    subscribe = pubsub["ggdefender.Defender:pubsub:subscribe"]["resources"]
    publish = pubsub["ggdefender.Defender:pubsub:publish"]["resources"]
    assert "ggdefender/remediation/requests" not in subscribe + publish
    assert "ggdefender/remediation/results" not in subscribe and "ggdefender/remediation/results" in publish


def test_a_remediation_job_can_mark_a_violation_benign_over_the_recipe_defaults(tmp_path):
    """The documented job path (set-config of Detect/VerificationStatesText) against the default Detect
    section, whose `VerificationStates: {}` object a job may not overwrite with a string."""
    from detect_helpers import FakeIpc, report

    from ggdefender.detect.service import DetectService
    from ggdefender.remediation import config as rconfig
    from ggdefender.remediation import documents
    from ggdefender.remediation.executor import Executor
    from ggdefender.remediation.safety import SafetyPolicy

    section = copy.deepcopy(defaults.DEFAULTS["Detect"])
    section["Profiles"] = [str(Path(__file__).parent / "fixtures" / "seed-000-listening-ports.json")]
    detect_ipc = FakeIpc()
    svc = DetectService(detect_ipc, "gw", str(tmp_path), clock=lambda: 1_764_000_000.0)
    svc.reconfigure(section)
    (alarm,) = svc.observe(report(1, ports=[8888]), 1000.0)
    vid = alarm["violationId"]

    class ConfigIpc:  # UpdateConfiguration MERGE into the Detect section, like the nucleus
        def get_config(self, key_path):
            return section

        def update_config(self, key_path, values):
            for key, value in values.items():
                assert not isinstance(section.get(key), dict), f"{key}: a container cannot become a leaf"
                section[key] = value

    settings = rconfig.parse({"SetConfigAllowedKeys": ["Detect/VerificationStatesText"]})
    plan = documents.parse({"schema": "ggdefender.remediation/1", "steps": [{"operation": "set-config", "arguments": {
        "section": "Detect", "values": {"VerificationStatesText": f"{vid}=BENIGN_POSITIVE:lab test rig"}}}]},
        settings)
    result = Executor(settings, SafetyPolicy(settings), ConfigIpc()).execute(plan, "mark-benign#1")
    assert result.status == "SUCCEEDED", result.details
    svc.reconfigure(section)
    finding = detect_ipc.on("ggdefender/things/gw/findings")[-1]
    assert finding["Workflow"]["Status"] == "SUPPRESSED"
    assert svc.active_violations()[0]["verificationState"] == "BENIGN_POSITIVE"
