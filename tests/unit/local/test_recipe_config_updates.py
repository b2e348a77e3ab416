"""--update-config (MERGE/RESET) for `ggdefender local`."""

import json

import pytest

from ggdefender.local.nucleus import config_updates as u
from ggdefender.local.nucleus.recipe_error import RecipeError


def test_update_config_merge_then_reset_order():
    default = {"Collector": {"SampleIntervalSeconds": "300", "Format": "json"}, "List": [1, 2], "Keep": 1}
    current = {"Collector": {"SampleIntervalSeconds": "10", "Format": "cbor", "Extra": 1}, "List": [1, 2], "Keep": 1}
    update = {"RESET": ["/Collector/SampleIntervalSeconds", "/Collector/Extra"],
              "MERGE": {"Collector": {"Format": "json"}, "List": [3], "New": {"A": 1}}}
    out = u.apply_update(current, default, update)
    assert out == {"Collector": {"SampleIntervalSeconds": "300", "Format": "json"}, "List": [3], "Keep": 1,
                   "New": {"A": 1}}
    # RESET happens before MERGE: merging and resetting the same key keeps the merge
    assert u.apply_update(current, default, {"RESET": ["/Keep"], "MERGE": {"Keep": 5}})["Keep"] == 5
    assert u.apply_update(current, default, {"RESET": [""]}) == default
    assert current["Collector"]["SampleIntervalSeconds"] == "10"


def test_update_config_validation(tmp_path):
    good = {"ggdefender.Defender": {"MERGE": {"Collector": {"SampleIntervalSeconds": 5}}, "RESET": ["/Detect"]}}
    assert u.load_update_config(json.dumps(good)) == good
    path = tmp_path / "update.json"
    path.write_text(json.dumps(good))
    assert u.load_update_config(str(path)) == good
    with pytest.raises(RecipeError, match="upper case"):
        u.load_update_config('{"a.B": {"merge": {}}}')
    with pytest.raises(RecipeError, match="not a JSON pointer"):
        u.load_update_config('{"a.B": {"RESET": ["Detect"]}}')
    with pytest.raises(RecipeError, match="MERGE: expected an object"):
        u.load_update_config('{"a.B": {"MERGE": [1]}}')
    with pytest.raises(RecipeError, match="not valid JSON"):
        u.load_update_config('{"a.B": ')
    with pytest.raises(RecipeError, match="neither a JSON object nor an existing file"):
        u.load_update_config(str(tmp_path / "missing.json"))


def test_update_config_file_that_is_not_text_or_too_deep(tmp_path):
    binary = tmp_path / "update.json"
    binary.write_bytes(b"\xff\xfe{}")
    with pytest.raises(RecipeError, match="cannot read it as UTF-8 text"):
        u.load_update_config(str(binary))
    with pytest.raises(RecipeError, match="nested too deeply"):
        u.load_update_config("{" + '"a": {' * 100_000 + "}" * 100_001)
