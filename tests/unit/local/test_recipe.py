"""Recipe loading, manifests and lifecycle parsing for `ggdefender local`."""

import ast
import json
from pathlib import Path

import pytest
import yaml

import ggdefender.local.nucleus as nucleus
from ggdefender.local.nucleus import recipe as r
from ggdefender.local.nucleus.recipe_error import RecipeError

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
    with pytest.raises(RecipeError, match="no manifest matches this platform"):
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
    assert rec.step("Install").setenv == {"GGDEFENDER_INDEX_URL": "{configuration:/Install/IndexUrl}"}
    assert list(rec.default_configuration) == ["Install", "accessControl"]


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
    with pytest.raises(RecipeError, match=message):
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
    with pytest.raises(RecipeError, match=message):
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
    with pytest.raises(RecipeError, match=r"no recipe for com.example.Hello=3.0.0 .*found: com.example.Hello=1.0.0, com.example.Hello=2.0.0"):
        r.find_recipe(tmp_path, "com.example.Hello", "3.0.0")
    assert r.available_versions(tmp_path, "com.example.Hello") == ["1.0.0", "2.0.0"]
    with pytest.raises(RecipeError, match="not a directory"):
        r.find_recipe(tmp_path / "missing", "a", "1.0.0")


def test_load_rejects_invalid_yaml_and_non_objects(tmp_path):
    bad = tmp_path / "x-1.0.0.yaml"
    bad.write_text("a: [unclosed")
    with pytest.raises(RecipeError, match="not valid YAML"):
        r.load_recipe(bad)
    bad.write_text("- just a list")
    with pytest.raises(RecipeError, match="must be an object"):
        r.load_recipe(bad)


def test_parse_merge():
    assert r.parse_merge("ggdefender.Defender=1.0.0") == ("ggdefender.Defender", "1.0.0")
    for bad in ("ggdefender.Defender", "=1.0.0", "a=b", "a b=1.0.0", "..=1.0.0", "../x=1.0.0"):
        with pytest.raises(RecipeError):
            r.parse_merge(bad)


def test_component_names_are_never_paths():
    r.check_component_name("ggdefender.Defender", "here")
    for bad in ("..", ".", "a/b", "../etc/passwd", "a\n", "x" * 129, ""):
        with pytest.raises(RecipeError, match="here: component name"):
            r.check_component_name(bad, "here")


RECIPE_MODULES = ("recipe", "semver", "recipe_variables", "config_updates", "dependency_order", "recipe_error")


def test_recipe_handling_is_pure_and_each_module_says_its_job():
    """docs/architecture.md calls the recipe modules pure (files in, plain data out): they import nothing that
    runs processes, sockets or the event loop, and nothing of the nucleus outside the recipe handling."""
    impure = {"asyncio", "socket", "subprocess", "signal", "threading"}
    for name in RECIPE_MODULES:
        tree = ast.parse((Path(nucleus.__file__).parent / f"{name}.py").read_text())
        assert ast.get_docstring(tree), f"{name}.py has no docstring saying its job"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not {a.name.split(".")[0] for a in node.names} & impure, f"{name}.py imports {impure}"
            elif isinstance(node, ast.ImportFrom) and node.level == 1:
                assert node.module in RECIPE_MODULES, f"{name}.py imports .{node.module}, outside recipe handling"
