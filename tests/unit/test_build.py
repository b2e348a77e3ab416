"""`ggdefender build`: gdk's layout, URI rewriting, gdk's own validators, gdk's and nucleus lite's limits, the
shipped archive."""

import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema
import pytest
import yaml

import gdk_cli
from ggdefender.devtools import build as b
from project_copy import copy_project

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "ggdefender.Defender.yaml"


@pytest.fixture
def project(tmp_path):
    """A copy of the project's build inputs (building wipes <root>/greengrass-build)."""
    return copy_project(tmp_path / "proj")


def test_recipe_yaml_is_a_relative_symlink_to_the_one_recipe():
    link = ROOT / "recipe.yaml"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    assert link.resolve() == RECIPE.resolve()
    assert not (ROOT / "recipe.json").exists()


def test_gdk_config_passes_gdks_own_validator():
    cfg = json.loads((ROOT / "gdk-config.json").read_text())
    gdk_cli.validate_config(cfg)
    (name, comp), = cfg["component"].items()
    assert name == "ggdefender.Defender" and comp["build"]["build_system"] == "custom"


def test_gdks_config_validator_can_fail():
    cfg = json.loads((ROOT / "gdk-config.json").read_text())
    cfg["component"]["ggdefender.Defender"]["build"]["build_system"] = "make"
    with pytest.raises(jsonschema.ValidationError):
        gdk_cli.validate_config(cfg)
    cfg = json.loads((ROOT / "gdk-config.json").read_text())
    cfg["gdk_version"] = "99.0.0"  # newer than the installed gdk: gdk refuses with its update command
    with pytest.raises(Exception, match="requires gdk cli version '99.0.0'"):
        gdk_cli.validate_config(cfg)


@pytest.mark.parametrize("name", ["ggdefender.Defender.yaml", "ggdefender.ExamplePlugin.yaml"])
def test_source_recipes_pass_gdks_recipe_validator_and_size_limit(name):
    raw = (ROOT / "recipes" / name).read_bytes()
    assert len(raw) < b.RECIPE_SIZE_LIMIT
    gdk_cli.validate_recipe(yaml.safe_load(raw))


def test_gdks_recipe_validator_catches_mistakes():
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe["Manifests"][0]["Platform"]["runtime"] = 5
    with pytest.raises(jsonschema.ValidationError, match="5 is not of type 'string'"):
        gdk_cli.validate_recipe(recipe)
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe["Manifests"][0]["Artifacts"][0]["Unarchive"] = "TAR"
    with pytest.raises(jsonschema.ValidationError, match="TAR"):
        gdk_cli.validate_recipe(recipe)


def test_recipe_contract():
    r = yaml.safe_load(RECIPE.read_text())
    assert r["ComponentName"] == "ggdefender.Defender"
    assert r["ComponentDependencies"]["aws.greengrass.Nucleus"]["VersionRequirement"].startswith(">=2.6.0")
    (manifest,) = r["Manifests"]
    assert manifest["Platform"] == {"os": "linux", "runtime": "*"}
    life = manifest["Lifecycle"]
    assert set(life) == {"install", "run"}
    # the install logic ships in the artifact (any shell syntax there); the recipe only calls it
    assert life["install"]["Script"] == ('sh "{artifacts:decompressedPath}/ggdefender/ggdefender/install.sh" '
                                         '"{artifacts:decompressedPath}/ggdefender" "{work:path}"')
    assert life["run"]["RequiresPrivilege"] is True
    assert "-m ggdefender run" in life["run"]["Script"]
    conf = r["ComponentConfiguration"]["DefaultConfiguration"]
    assert list(conf) == ["accessControl"]  # the settings' defaults live in the code (defaults.py)
    acl = conf["accessControl"]
    mqtt = {res for pol in acl["aws.greengrass.ipc.mqttproxy"].values() for res in pol["resources"]}
    base = "$aws/things/{iot:thingName}/defender/metrics/"
    for fmt in ("json", "cbor"):
        assert base + fmt in mqtt and base + fmt + "/accepted" in mqtt and base + fmt + "/rejected" in mqtt
    assert "$aws/things/{iot:thingName}/jobs/notify-next" in mqtt
    assert {"ggdefender/things/{iot:thingName}/violations", "ggdefender/things/{iot:thingName}/findings"} <= mqtt
    # exactly the topics used: no multi-level wildcards, no other things' topics
    assert not any("#" in res or "*" in res or res.startswith("$aws/things/+") for res in mqtt)
    pubsub = {res for pol in acl["aws.greengrass.ipc.pubsub"].values() for res in pol["resources"]}
    assert all(res.startswith("ggdefender/") and "*" not in res for res in pubsub)
    assert {"ggdefender/collector/commands", "ggdefender/collector/events", "ggdefender/custom-metrics"} <= pubsub
    cli = list(acl["aws.greengrass.Cli"].values())
    assert cli == [{"policyDescription": cli[0]["policyDescription"],
                    "operations": ["aws.greengrass#RestartComponent"], "resources": ["ggdefender.Defender"]}]


@pytest.mark.parametrize("name", ["ggdefender.Defender.yaml", "ggdefender.ExamplePlugin.yaml"])
def test_recipes_fit_nucleus_lite(name, project):
    """Lite's limits, from its source (numbers and places in build.py): the source file (comments count) and the
    built recipe fit, with room to spare for a user's additions."""
    raw = (ROOT / "recipes" / name).read_bytes()
    recipe = yaml.safe_load(raw)
    assert b.lite_problems(recipe, len(raw)) == []
    assert len(raw) < 0.75 * b.LITE_MAX_RECIPE_BYTES and b.lite_subobjects(recipe) < 0.8 * b.LITE_MAX_SUBOBJECTS
    b.build(project)
    built = project / "greengrass-build" / "recipes" / (name if name == RECIPE.name else
                                                        name.replace(".yaml", "-1.0.0.yaml"))
    assert b.lite_problems(yaml.safe_load(built.read_bytes()), built.stat().st_size) == []
    # the classic nucleus takes the same file: runtime "*" is its wildcard (PlatformHelper.isAttributeSatisfied)
    # and its lifecycle keys are case-insensitive (Topics keyed by CaseInsensitiveString; it looks up "install")
    (manifest,) = recipe["Manifests"]
    assert manifest["Platform"]["runtime"] == "*" and all(k == k.lower() for k in manifest["Lifecycle"])


def test_lite_problems_names_each_limit():
    recipe = yaml.safe_load(RECIPE.read_text())
    assert b.lite_problems(recipe, b.LITE_MAX_RECIPE_BYTES + 1) == [f"{b.LITE_MAX_RECIPE_BYTES + 1} bytes, over "
                                                                  f"nucleus lite's {b.LITE_MAX_RECIPE_BYTES}"]
    big = json.loads(json.dumps(recipe))
    big["ComponentConfiguration"]["DefaultConfiguration"]["Extra"] = {f"k{i}": i for i in range(40)}
    assert any("sub-objects, over nucleus lite's 255" in p for p in b.lite_problems(big, 100))
    life = json.loads(json.dumps(recipe))
    steps = life["Manifests"][0]["Lifecycle"]
    steps["Install"] = steps.pop("install")
    steps["run"]["Script"] = 'PY="${GGDEFENDER_PYTHON-python3}"; f() { :; }'
    problems = b.lite_problems(life, 100)
    assert "lifecycle step 'Install': nucleus lite runs only 'install'" in problems
    assert any("'run': a brace that is not a recipe variable" in p for p in problems)
    del life["Manifests"][0]["Platform"]["runtime"]
    assert any("lite skips it" in p for p in b.lite_problems(life, 100))


def test_build_warns_when_a_changed_recipe_would_not_run_on_lite(project, capsys):
    target = project / "recipes" / "ggdefender.Defender.yaml"
    target.write_text(target.read_text().replace("      install:\n", "      Install:\n"))
    b.build(project)  # still built: the classic nucleus takes it
    assert ("ggdefender build: warning: ggdefender.Defender.yaml will not run on Greengrass nucleus lite: "
            "lifecycle step 'Install': nucleus lite runs only 'install'") in capsys.readouterr().err
    target.write_text(target.read_text().replace("      Install:\n", "      install:\n"))
    b.build(project)
    assert "warning" not in capsys.readouterr().err


def test_build_writes_gdk_layout(project):
    result = b.build(project)
    out = project / "greengrass-build"
    # named as gdk names it: the recipe.yaml link's target, which `gdk component publish` then reads
    assert result.recipe == out / "recipes" / "ggdefender.Defender.yaml"
    assert result.artifact == out / "artifacts" / "ggdefender.Defender" / "1.0.0" / "ggdefender.zip"
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    ours = [f for f in files if "ggdefender.Defender" in f]
    assert ours == ["artifacts/ggdefender.Defender/1.0.0/ggdefender.zip", "recipes/ggdefender.Defender.yaml"]
    built = yaml.safe_load(result.recipe.read_text())
    assert built["Manifests"][0]["Artifacts"][0]["URI"] == \
        "s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/ggdefender.zip"
    assert (built["ComponentName"], built["ComponentVersion"], built["ComponentPublisher"]) == \
        ("ggdefender.Defender", "1.0.0", "ggdefender")
    assert len(result.recipe.read_bytes()) < b.RECIPE_SIZE_LIMIT
    gdk_cli.validate_recipe(built)
    gdk_cli.validate_recipe(yaml.safe_load((out / "recipes" / "ggdefender.ExamplePlugin-1.0.0.yaml").read_text()))


def test_version_and_author_come_from_gdk_config(project):
    cfg = json.loads((project / "gdk-config.json").read_text())
    cfg["component"]["ggdefender.Defender"].update(version="2.3.4", author="Example Corp")
    (project / "gdk-config.json").write_text(json.dumps(cfg))
    result = b.build(project)
    built = yaml.safe_load(result.recipe.read_text())
    assert built["ComponentVersion"] == "2.3.4" and built["ComponentPublisher"] == "Example Corp"
    assert result.artifact.parent.name == "2.3.4"


def test_archive_contents(project):
    (project / "components" / "ggdefender" / "__pycache__").mkdir(exist_ok=True)
    (project / "components" / "ggdefender" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    result = b.build(project)
    with zipfile.ZipFile(result.artifact) as zf:
        names = zf.namelist()
        reqs = zf.read("requirements.txt").decode()
    assert "ggdefender/__main__.py" in names and "ggdefender/collector/sources/procfs.py" in names
    assert "ggdefender/install.sh" in names and "ggdefender/defaults.py" in names
    # the developer-only packages, whatever they hold: the offline core and the developer tools (this build, detect
    # replay and its plot); `detect validate` and the rest of detect ship
    for left_out in ("local", "devtools"):
        assert (project / "components" / "ggdefender" / left_out / "__init__.py").is_file()
        assert not any(n.startswith(f"ggdefender/{left_out}/") for n in names)
    assert "ggdefender/detect/cli.py" in names and "ggdefender/detect/profile.py" in names
    assert not any(n.endswith(("/build.py", "/replay.py", "/plot.py")) for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert all(n.startswith("ggdefender/") or n == "requirements.txt" for n in names)
    pins = [line for line in reqs.splitlines() if line and not line.startswith("#")]
    assert pins and all(re.match(r"^[A-Za-z0-9._-]+==\S+$", p) for p in pins)
    assert any(p.startswith("awsiotsdk==") for p in pins)
    if sys.version_info >= (3, 11):  # the build falls back to its own parse without tomllib; check it agrees
        import tomllib
        assert pins == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def test_archive_is_reproducible(project):
    first = hashlib.sha256(b.build(project).artifact.read_bytes()).hexdigest()
    second = hashlib.sha256(b.build(project).artifact.read_bytes()).hexdigest()
    assert first == second


def test_unpinned_dependency_is_refused(project):
    text = (project / "pyproject.toml").read_text().replace('"cbor2==6.3.0"', '"cbor2>=6"')
    (project / "pyproject.toml").write_text(text)
    with pytest.raises(b.BuildError, match="not pinned"):
        b.build(project)


def test_two_recipes_or_none_are_refused(project):
    (project / "recipe.json").write_text("{}")
    with pytest.raises(b.BuildError, match="exactly one"):
        b.build(project)
    (project / "recipe.json").unlink()
    (project / "recipe.yaml").unlink()
    with pytest.raises(b.BuildError, match="exactly one"):
        b.build(project)


def test_oversized_recipe_is_refused(project):
    target = project / "recipes" / "ggdefender.Defender.yaml"
    target.write_text(target.read_text() + "#" + "x" * b.RECIPE_SIZE_LIMIT + "\n")
    with pytest.raises(b.BuildError, match="16000-byte limit"):
        b.build(project)


def test_artifact_not_built_is_refused(project):
    target = project / "recipes" / "ggdefender.Defender.yaml"
    target.write_text(target.read_text().replace("COMPONENT_VERSION/ggdefender.zip", "COMPONENT_VERSION/other.zip"))
    with pytest.raises(b.BuildError, match="other.zip"):
        b.build(project)


def test_cli_print_merge_and_gdk_style_invocation(project):
    env = {**os.environ, "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, "-m", "ggdefender", "build", "--print-merge", "--root", str(project)],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ggdefender.Defender=1.0.0"
    # what gdk's custom build runs, from the project folder, with no package installed on the path
    subprocess.run([sys.executable, "components/ggdefender/devtools/build.py"], cwd=project, env=env, check=True,
                   capture_output=True)
    assert (project / "greengrass-build" / "recipes" / "ggdefender.Defender.yaml").is_file()
