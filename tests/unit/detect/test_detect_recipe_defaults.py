from pathlib import Path

import yaml

from ggdefender.detect.config import parse

RECIPE = Path(__file__).resolve().parents[3] / "recipes" / "ggdefender.Defender.yaml"


def test_recipe_detect_defaults_parse_and_keep_mitigation_off():
    recipe = yaml.safe_load(RECIPE.read_text())
    section = recipe["ComponentConfiguration"]["DefaultConfiguration"]["Detect"]
    cfg = parse(section)
    assert cfg.enabled and cfg.profiles == () and cfg.mitigation.enabled is False
    assert cfg.stats.warmup == 30 and cfg.findings.account == "000000000000"
    # detect (process B) must be allowed to read the remediation results it records on violations
    subscribe = recipe["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]["aws.greengrass.ipc.pubsub"][
        "ggdefender.Defender:pubsub:subscribe"]["resources"]
    assert "ggdefender/remediation/results" in subscribe
