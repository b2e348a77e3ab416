"""docs/examples/fleet-profile.json (the fleet tier's example and the benchmark's profile) is a profile AWS's
CreateSecurityProfile model accepts and detect's one parser loads, with each kind of behavior it promises."""

import json
from pathlib import Path

import aws_models
from ggdefender.detect.profile import lint, load_profile

PATH = Path(__file__).resolve().parents[3] / "docs" / "examples" / "fleet-profile.json"


def test_example_profile_is_valid_for_aws_and_for_detect():
    doc = json.loads(PATH.read_text())
    aws_models.check(doc, "iot", "CreateSecurityProfile")
    profile = load_profile(doc)
    assert lint(profile) == []
    kinds = {b.key.split("/")[1]: b for b in profile.behaviors}
    assert kinds["listening-ports"].criteria_type == "STATIC"
    assert kinds["bytes-out-p99"].criteria_type == "STATISTICAL" and kinds["bytes-out-p99"].quantile == 99.0
    assert kinds["bytes-out-p99"].duration == 300
    assert kinds["connections"].to_alarm == 2
    assert kinds["message-size"].metric == "aws:message-byte-size"
    assert kinds["ml-bytes-out"].criteria_type == "MACHINE_LEARNING"
