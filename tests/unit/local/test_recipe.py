"""Recipe loading, manifests, variables and --update-config for `ggdefender local`."""

import json

import pytest
import yaml

from ggdefender.local.nucleus import recipe as r

LINUX = {"os": "linux", "architecture": "amd64"}


def _doc(**over):
    doc = {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": "com.example.Hello",
        "ComponentVersion": "1.0.0",
        "ComponentConfiguration": {"DefaultConfiguration": {
            "Greeting": "hi", "Nested": {"A": 1, "B": [1, 2]}, "Flag": True, "Nothing": None,
            "accessControl": {"aws.greengrass.ipc.mqttproxy": {"p1": {
                "operations": ["aws.greengrass#PublishToIoTCore"],
                "resources": ["$aws/things/{iot:thingName}/defender/metrics/json"]}}}}},
        "Manifests": [
            {"Platform": {"os": "windows"}, "Lifecycle": {"Run": "win.exe"}},
            {"Platform": {"os": "linux", "architecture": "/amd64|aarch64/"},
             "Lifecycle": {"Setenv": {"GREETING": "{configuration:/Greeting}"},
                           "Install": {"Script": "pip install x", "Skipif": "onpath pip", "Timeout": "30"},
                           "Run": "python3 {artifacts:path}/hello.py"},
             "Artifacts": [{"URI": "s3://bucket/com.example.Hello/1.0.0/hello.py"},
                           {"URI": "s3://bucket/app.zip", "Unarchive": "ZIP"}]},
            {"Lifecycle": {"Run": "echo fallback"}},
        ],
    }
    doc.update(over)
    return doc


def test_parse_picks_first_matching_manifest_and_normalizes_steps():
    rec = r.parse_recipe(_doc(), platform=LINUX)
    assert rec.name == "com.example.Hello" and rec.version == "1.0.0"
    run = rec.step("Run")
    assert run.script == "python3 {artifacts:path}/hello.py" and run.timeout is None
    install = rec.step("Install")
    assert install.skipif == ("onpath", "pip") and install.timeout == 30.0
    assert rec.setenv == {"GREETING": "{configuration:/Greeting}"}
    assert [a["filename"] for a in rec.artifacts] == ["hello.py", "app.zip"]
    assert rec.artifacts[1]["Unarchive"] == "ZIP"
    assert rec.artifacts[0]["Permission"] == {"Read": "OWNER", "Execute": "NONE"}


def test_platformless_manifest_is_the_fallback():
    rec = r.parse_recipe(_doc(), platform={"os": "linux", "architecture": "riscv64"})
    assert rec.step("Run").script == "echo fallback"


def test_no_matching_manifest_names_platform():
    doc = _doc(Manifests=[{"Platform": {"os": "windows"}, "Lifecycle": {"Run": "x"}}])
    with pytest.raises(r.RecipeError, match="no manifest matches this platform"):
        r.parse_recipe(doc, platform=LINUX)


def test_wildcard_platform_matches_absent_value():
    doc = _doc(Manifests=[{"Platform": {"os": "linux", "runtime": "*"}, "Lifecycle": {"Run": "x"}}])
    assert r.parse_recipe(doc, platform=LINUX).step("Run").script == "x"


def test_a_manifest_only_for_nucleus_lite_is_skipped_as_the_classic_nucleus_skips_it():
    doc = _doc(Manifests=[{"Platform": {"os": "linux", "runtime": "aws_nucleus_lite"}, "Lifecycle": {"run": "lite"}},
                          {"Platform": {"os": "linux", "runtime": "*"}, "Lifecycle": {"run": "both"}}])
    assert r.parse_recipe(doc, platform=LINUX).step("Run").script == "both"


def test_the_shipped_recipe_runs_its_lower_case_steps():
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[3] / "recipes" / "ggdefender.Defender.yaml"
    rec = r.load_recipe(shipped, platform=LINUX)
    assert set(rec.lifecycle) == {"Install", "Run"}
    assert rec.step("Install").script.startswith('sh "{artifacts:decompressedPath}/ggdefender/ggdefender/install.sh"')
    assert rec.step("Install").timeout == 900.0 and rec.step("Run").requires_privilege
    assert rec.step("Run").setenv["PYTHONPATH"] == "{artifacts:decompressedPath}/ggdefender"
    assert list(rec.default_configuration) == ["accessControl"]


def test_global_lifecycle_with_selections():
    doc = _doc(Manifests=[{"Platform": {"os": "linux"}, "Selections": ["linux"]}],
               Lifecycle={"linux": {"Run": "echo linux"}, "windows": {"Run": "echo win"}})
    assert r.parse_recipe(doc, platform=LINUX).step("Run").script == "echo linux"
    doc2 = _doc(Manifests=[{"Platform": {"os": "linux"}}], Lifecycle={"all": {"Run": {"Script": "echo all"}}})
    assert r.parse_recipe(doc2, platform=LINUX).step("Run").script == "echo all"


@pytest.mark.parametrize("change, message", [
    ({"RecipeFormatVersion": "2019-01-01"}, "RecipeFormatVersion"),
    ({"ComponentName": "bad name!"}, "may use only letters"),
    ({"ComponentVersion": 1.0}, "ComponentVersion is required"),
    ({"ComponentVersion": "1.0"}, "not a semantic version"),
    ({"Manifests": []}, "Manifests is required"),
    ({"Manifests": [{"Lifecycle": {"Run": "a", "Startup": "b"}}]}, "mutually exclusive"),
    ({"Manifests": [{"Lifecycle": {"Runn": "a"}}]}, "unknown lifecycle step 'Runn'"),
    ({"Manifests": [{"Lifecycle": {"Run": {"Script": "a", "Skipif": "maybe x"}}}]}, "Skipif"),
    ({"Manifests": [{"Lifecycle": {"Run": {"Script": "a", "Timeout": "soon"}}}]}, "Timeout"),
    ({"Manifests": [{"Lifecycle": {"Run": {"Script": "a", "RequiresPrivilege": "maybe"}}}]}, "RequiresPrivilege"),
    ({"Manifests": [{"Lifecycle": {"Run": {"Scrpt": "a"}}}]}, "unknown key"),
    ({"Manifests": [{"Artifacts": [{"URI": "s3://b/x.zip"}, {"URI": "s3://c/x.zip"}]}]}, "appears twice"),
    ({"Manifests": [{"Artifacts": [{"URI": "s3://b/x.zip", "Unarchive": "TAR"}]}]}, "Unarchive"),
    ({"ComponentDependencies": {"dep": {"DependencyType": "MAYBE"}}}, "HARD or SOFT"),
    ({"ComponentConfiguration": {"DefaultConfiguration": [1]}}, "DefaultConfiguration must be an object"),
])
def test_bad_recipes_get_clear_errors(change, message):
    with pytest.raises(r.RecipeError, match=message):
        r.parse_recipe(_doc(**change), platform=LINUX)


@pytest.mark.parametrize("change, message", [
    # the newcomer's recipe: it ran as INSTALLED then FINISHED with nothing run and no word
    ({"Manifests": [{"Lifecyle": {"Run": "echo hi"}}]},
     r"Manifests\[0\]: unknown key\(s\) Lifecyle \(did you mean Lifecycle\?\)"),
    ({"Lifecyle": {"Run": "echo hi"}}, r"unknown key\(s\) Lifecyle \(did you mean Lifecycle\?\)"),
    ({"ComponentVerison": "1.0.0"}, r"ComponentVerison \(did you mean ComponentVersion\?\)"),
    ({"Manifests": [{"Lifecycle": {"Instal": "x"}}]}, r"unknown lifecycle step 'Instal' \(did you mean Install\?"),
    ({"Manifests": [{"Lifecycle": {"Run": {"Scrpt": "a"}}}]}, r"Scrpt \(did you mean Script\?\)"),
])
def test_misspelled_recipe_keys_are_errors_naming_the_closest_key(change, message):
    with pytest.raises(r.RecipeError, match=message):
        r.parse_recipe(_doc(**change), platform=LINUX)


def test_every_documented_recipe_key_is_accepted():
    doc = _doc(ComponentDescription="d", ComponentPublisher="p", ComponentType="aws.greengrass.generic",
               ComponentSource="arn:x", ComponentConfiguration={"DefaultConfiguration": {}},
               ComponentDependencies={}, Lifecycle={"all": {"Run": "echo all"}},
               Manifests=[{"Name": "linux", "Platform": {"os": "linux"}, "Selections": ["all"], "Artifacts": []}])
    assert r.parse_recipe(doc, platform=LINUX).step("Run").script == "echo all"


def test_keys_are_case_insensitive():
    doc = {"recipeFormatVersion": "2020-01-25", "componentName": "a.b", "componentVersion": "2.0.0",
           "manifests": [{"lifecycle": {"run": {"script": "x", "requiresPrivilege": True}}}]}
    rec = r.parse_recipe(doc, platform=LINUX)
    assert rec.step("Run").requires_privilege is True


def test_find_recipe_by_name_or_by_content(tmp_path):
    (tmp_path / "com.example.Hello-1.0.0.yaml").write_text(yaml.safe_dump(_doc()))
    other = _doc(ComponentVersion="2.0.0")
    (tmp_path / "recipe.json").write_text(json.dumps(other))
    (tmp_path / "broken.yaml").write_text(": : :\n  - [")
    assert r.find_recipe(tmp_path, "com.example.Hello", "1.0.0").name == "com.example.Hello-1.0.0.yaml"
    assert r.find_recipe(tmp_path, "com.example.Hello", "2.0.0").name == "recipe.json"
    with pytest.raises(r.RecipeError, match=r"no recipe for com.example.Hello=3.0.0 .*found: com.example.Hello=1.0.0, com.example.Hello=2.0.0"):
        r.find_recipe(tmp_path, "com.example.Hello", "3.0.0")
    assert r.available_versions(tmp_path, "com.example.Hello") == ["1.0.0", "2.0.0"]
    with pytest.raises(r.RecipeError, match="not a directory"):
        r.find_recipe(tmp_path / "missing", "a", "1.0.0")


def test_load_rejects_invalid_yaml_and_non_objects(tmp_path):
    bad = tmp_path / "x-1.0.0.yaml"
    bad.write_text("a: [unclosed")
    with pytest.raises(r.RecipeError, match="not valid YAML"):
        r.load_recipe(bad)
    bad.write_text("- just a list")
    with pytest.raises(r.RecipeError, match="must be an object"):
        r.load_recipe(bad)


def test_parse_merge():
    assert r.parse_merge("ggdefender.Defender=1.0.0") == ("ggdefender.Defender", "1.0.0")
    for bad in ("ggdefender.Defender", "=1.0.0", "a=b", "a b=1.0.0", "..=1.0.0", "../x=1.0.0"):
        with pytest.raises(r.RecipeError):
            r.parse_merge(bad)


def test_component_names_are_never_paths():
    r.check_component_name("ggdefender.Defender", "here")
    for bad in ("..", ".", "a/b", "../etc/passwd", "a\n", "x" * 129, ""):
        with pytest.raises(r.RecipeError, match="here: component name"):
            r.check_component_name(bad, "here")


def _ctx(**over):
    base = dict(name="com.example.Hello", configuration=_doc()["ComponentConfiguration"]["DefaultConfiguration"],
                artifacts_path="/gg/packages/artifacts/com.example.Hello/1.0.0",
                decompressed_path="/gg/packages/artifacts-unarchived/com.example.Hello/1.0.0",
                work_path="/gg/work/com.example.Hello", root_path="/gg", thing_name="myThing")
    base.update(over)
    return r.VariableContext(**base)


def test_variables():
    dep = _ctx(name="com.example.Dep", configuration={"server": {"port": 8080}}, work_path="/gg/work/com.example.Dep")
    ctx = _ctx(dependencies={"com.example.Dep": dep})
    text = ("{artifacts:path}|{artifacts:decompressedPath}|{work:path}|{kernel:rootPath}|{iot:thingName}|"
            "{configuration:/Greeting}|{configuration:/Nested}|{configuration:/Flag}|{configuration:/Nothing}|"
            "{configuration:/Nested/B/1}|{com.example.Dep:configuration:/server/port}|{com.example.Dep:work:path}")
    assert r.interpolate(text, ctx).split("|") == [
        "/gg/packages/artifacts/com.example.Hello/1.0.0",
        "/gg/packages/artifacts-unarchived/com.example.Hello/1.0.0",
        "/gg/work/com.example.Hello", "/gg", "myThing", "hi", '{"A":1,"B":[1,2]}', "true", "null", "2",
        "8080", "/gg/work/com.example.Dep"]


def test_unresolvable_variables_stay_literal():
    ctx = _ctx()
    for text in ("{configuration:/Missing}", "{other.Comp:work:path}", "{iot:unknown}", "{artifacts:nope}",
                 "{not a variable}", "${HOME}"):
        assert r.interpolate(text, ctx) == text


def test_interpolate_configuration_substitutes_thing_name_in_access_control():
    ctx = _ctx()
    out = r.interpolate_configuration(ctx.configuration, ctx)
    resources = out["accessControl"]["aws.greengrass.ipc.mqttproxy"]["p1"]["resources"]
    assert resources == ["$aws/things/myThing/defender/metrics/json"]
    assert out["Nested"] == {"A": 1, "B": [1, 2]}
    # input untouched
    assert "{iot:thingName}" in ctx.configuration["accessControl"]["aws.greengrass.ipc.mqttproxy"]["p1"]["resources"][0]


def test_update_config_merge_then_reset_order():
    default = {"Collector": {"SampleIntervalSeconds": "300", "Format": "json"}, "List": [1, 2], "Keep": 1}
    current = {"Collector": {"SampleIntervalSeconds": "10", "Format": "cbor", "Extra": 1}, "List": [1, 2], "Keep": 1}
    update = {"RESET": ["/Collector/SampleIntervalSeconds", "/Collector/Extra"],
              "MERGE": {"Collector": {"Format": "json"}, "List": [3], "New": {"A": 1}}}
    out = r.apply_update(current, default, update)
    assert out == {"Collector": {"SampleIntervalSeconds": "300", "Format": "json"}, "List": [3], "Keep": 1,
                   "New": {"A": 1}}
    # RESET happens before MERGE: merging and resetting the same key keeps the merge
    assert r.apply_update(current, default, {"RESET": ["/Keep"], "MERGE": {"Keep": 5}})["Keep"] == 5
    assert r.apply_update(current, default, {"RESET": [""]}) == default
    assert current["Collector"]["SampleIntervalSeconds"] == "10"


def test_update_config_validation(tmp_path):
    good = {"ggdefender.Defender": {"MERGE": {"Collector": {"SampleIntervalSeconds": 5}}, "RESET": ["/Detect"]}}
    assert r.load_update_config(json.dumps(good)) == good
    path = tmp_path / "update.json"
    path.write_text(json.dumps(good))
    assert r.load_update_config(str(path)) == good
    with pytest.raises(r.RecipeError, match="upper case"):
        r.load_update_config('{"a.B": {"merge": {}}}')
    with pytest.raises(r.RecipeError, match="not a JSON pointer"):
        r.load_update_config('{"a.B": {"RESET": ["Detect"]}}')
    with pytest.raises(r.RecipeError, match="MERGE: expected an object"):
        r.load_update_config('{"a.B": {"MERGE": [1]}}')
    with pytest.raises(r.RecipeError, match="not valid JSON"):
        r.load_update_config('{"a.B": ')
    with pytest.raises(r.RecipeError, match="neither a JSON object nor an existing file"):
        r.load_update_config(str(tmp_path / "missing.json"))


def test_versions_and_requirements():
    assert r.satisfies("1.2.3", ">=1.0.0 <2.0.0")
    assert not r.satisfies("2.0.0", ">=1.0.0 <2.0.0")
    assert r.satisfies("1.9.0", "^1.2.0") and not r.satisfies("2.0.0", "^1.2.0")
    assert r.satisfies("1.2.9", "~1.2.0") and not r.satisfies("1.3.0", "~1.2.0")
    assert r.satisfies("3.0.0", "<1.0.0 || >=3.0.0")
    assert r.satisfies("2.9.1", "2.x") and not r.satisfies("3.0.0", "2.x")
    assert r.satisfies("1.2.7", "1.2.*") and not r.satisfies("1.3.0", "1.2.*")
    assert r.satisfies("0.0.1", "*")
    with pytest.raises(r.RecipeError, match="cannot read version requirement"):
        r.parse_requirement(">=banana", "here")
    assert r.version_key("1.0.0-rc1") < r.version_key("1.0.0") < r.version_key("1.0.10")


def test_dependency_order_and_cycles():
    a = r.parse_recipe(_doc(ComponentName="a", ComponentDependencies={"b": {}}), platform=LINUX)
    b = r.parse_recipe(_doc(ComponentName="b", ComponentDependencies={"aws.greengrass.Nucleus": {}}),
                       platform=LINUX)
    assert [x.name for x in r.dependency_order([a, b])] == ["b", "a"]
    c = r.parse_recipe(_doc(ComponentName="b", ComponentDependencies={"a": {}}), platform=LINUX)
    with pytest.raises(r.RecipeError, match="dependency cycle"):
        r.dependency_order([a, c])


def test_update_config_file_that_is_not_text_or_too_deep(tmp_path):
    binary = tmp_path / "update.json"
    binary.write_bytes(b"\xff\xfe{}")
    with pytest.raises(r.RecipeError, match="cannot read it as UTF-8 text"):
        r.load_update_config(str(binary))
    with pytest.raises(r.RecipeError, match="nested too deeply"):
        r.load_update_config("{" + '"a": {' * 100_000 + "}" * 100_001)
