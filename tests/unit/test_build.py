"""`ggdefender build`: gdk's layout, URI rewriting, gdk's own validators, gdk's and nucleus lite's limits, the
shipped archive."""

import hashlib
import io
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
from ggdefender.devtools import wheels as w
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
    # one manifest per architecture both nuclei report (lite recipe.c get_current_architecture, the classic
    # PlatformResolver.getArchInfo): the code and that platform's wheels; all run the global Lifecycle's `all`
    assert [m["Platform"] for m in r["Manifests"]] == [{"os": "linux", "runtime": "*", "architecture": a}
                                                      for a in ("amd64", "aarch64", "arm")]
    for manifest, arch in zip(r["Manifests"], ("amd64", "aarch64", "arm")):
        assert set(manifest) == {"Platform", "Artifacts"}
        code, wheels = manifest["Artifacts"]
        assert code == {"URI": "s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/ggdefender.zip", "Unarchive": "ZIP",
                        "Permission": {"Read": "ALL"}}  # the unprivileged collector reads the code
        assert wheels == {"URI": f"s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/ggdefender-wheels-{arch}.zip",
                          "Unarchive": "ZIP"}  # read by the install step only, which runs as the owner
    assert list(r["Lifecycle"]) == ["all"]
    life = r["Lifecycle"]["all"]
    assert set(life) == {"install", "run"}
    # the install logic ships in the artifact (any shell syntax there); the recipe only calls it
    assert life["install"]["Script"] == ('sh "{artifacts:decompressedPath}/ggdefender/ggdefender/install.sh" '
                                         '"{artifacts:decompressedPath}/ggdefender" "{work:path}"')
    # Install/IndexUrl reaches install.sh as an environment variable: both nuclei set one without a shell parsing
    # the value (the classic nucleus would paste it into the script text unquoted)
    assert life["install"]["Setenv"] == {"GGDEFENDER_INDEX_URL": "{configuration:/Install/IndexUrl}"}
    assert life["run"]["RequiresPrivilege"] is True
    assert "-m ggdefender run" in life["run"]["Script"]
    conf = r["ComponentConfiguration"]["DefaultConfiguration"]
    # the settings' defaults live in the code (defaults.py); the recipe holds only what a nucleus must see:
    # accessControl, and the key the install step's recipe variable reads (lite fails a step whose key is missing)
    assert sorted(conf) == ["Install", "accessControl"] and conf["Install"] == {"IndexUrl": ""}
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
    # room for one more accessControl policy (one with an operation and two resources costs 14 sub-objects)
    assert len(raw) < 0.75 * b.LITE_MAX_RECIPE_BYTES and b.lite_subobjects(recipe) <= b.LITE_MAX_SUBOBJECTS - 16
    b.build(project)
    built = project / "greengrass-build" / "recipes" / (name if name == RECIPE.name else
                                                        name.replace(".yaml", "-1.0.0.yaml"))
    assert b.lite_problems(yaml.safe_load(built.read_bytes()), built.stat().st_size) == []
    # the classic nucleus takes the same file: runtime "*" is its wildcard (PlatformHelper.isAttributeSatisfied)
    # and its lifecycle keys are case-insensitive (Topics keyed by CaseInsensitiveString; it looks up "install")
    for manifest in recipe["Manifests"]:
        life = manifest.get("Lifecycle") or recipe["Lifecycle"]["all"]
        assert manifest["Platform"]["runtime"] == "*" and all(k == k.lower() for k in life)


def test_lite_problems_names_each_limit():
    recipe = yaml.safe_load(RECIPE.read_text())
    assert b.lite_problems(recipe, b.LITE_MAX_RECIPE_BYTES + 1) == [f"{b.LITE_MAX_RECIPE_BYTES + 1} bytes, over "
                                                                  f"nucleus lite's {b.LITE_MAX_RECIPE_BYTES}"]
    big = json.loads(json.dumps(recipe))
    big["ComponentConfiguration"]["DefaultConfiguration"]["Extra"] = {f"k{i}": i for i in range(40)}
    assert any("sub-objects, over nucleus lite's 255" in p for p in b.lite_problems(big, 100))
    life = json.loads(json.dumps(recipe))
    steps = life["Lifecycle"]["all"]
    steps["Install"] = steps.pop("install")
    steps["run"]["Script"] = 'PY="${GGDEFENDER_PYTHON-python3}"; f() { :; }'
    problems = b.lite_problems(life, 100)
    assert "lifecycle step 'Install': nucleus lite runs only 'install'" in problems
    assert any("'run': a brace that is not a recipe variable" in p for p in problems)
    for manifest in life["Manifests"]:
        del manifest["Platform"]["runtime"]
    assert any("lite skips it" in p for p in b.lite_problems(life, 100))
    # lite compares the architecture exactly and selects a global Lifecycle only under `all` or `linux`
    other = json.loads(json.dumps(recipe))
    other["Manifests"][0]["Platform"]["architecture"] = "/amd64|aarch64/"
    other["Manifests"][1]["Selections"] = ["arm64"]
    assert b.lite_problems(other, 100) == [
        "manifest 0: architecture '/amd64|aarch64/' is none lite reports (*, amd64, x86, aarch64, arm, riscv64), "
        "compared exactly",
        "manifest 1: no Lifecycle of its own and none of its Selections in the global Lifecycle among all, linux: "
        "lite selects no lifecycle"]
    # lite fails a step whose {configuration:/...} names a key the configuration lacks
    unset = json.loads(json.dumps(recipe))
    del unset["ComponentConfiguration"]["DefaultConfiguration"]["Install"]
    assert b.lite_problems(unset, 100) == [
        "lifecycle step 'install': {configuration:/Install/IndexUrl} names no key of DefaultConfiguration (lite fails "
        "the step; the classic nucleus leaves the text as it is)"]


def test_build_warns_when_a_changed_recipe_would_not_run_on_lite(project, capsys):
    target = project / "recipes" / "ggdefender.Defender.yaml"
    # the lifecycle step only (DefaultConfiguration's `Install:` section is indented the same)
    target.write_text(target.read_text().replace("  all:\n    install:\n", "  all:\n    Install:\n"))
    b.build(project)  # still built: the classic nucleus takes it
    assert ("ggdefender build: warning: ggdefender.Defender.yaml will not run on Greengrass nucleus lite: "
            "lifecycle step 'Install': nucleus lite runs only 'install'") in capsys.readouterr().err
    target.write_text(target.read_text().replace("  all:\n    Install:\n", "  all:\n    install:\n"))
    b.build(project)
    assert "warning" not in capsys.readouterr().err


def test_build_writes_gdk_layout(project):
    result = b.build(project)
    out = project / "greengrass-build"
    # named as gdk names it: the recipe.yaml link's target, which `gdk component publish` then reads
    assert result.recipe == out / "recipes" / "ggdefender.Defender.yaml"
    folder = out / "artifacts" / "ggdefender.Defender" / "1.0.0"
    assert result.artifact == folder / "ggdefender.zip"
    assert result.wheel_artifacts == {a: folder / f"ggdefender-wheels-{a}.zip" for a in ("amd64", "aarch64", "arm")}
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    ours = [f for f in files if "ggdefender.Defender" in f]
    assert ours == sorted(["recipes/ggdefender.Defender.yaml", "artifacts/ggdefender.Defender/1.0.0/ggdefender.zip",
                           *(f"artifacts/ggdefender.Defender/1.0.0/ggdefender-wheels-{a}.zip"
                             for a in ("amd64", "aarch64", "arm"))])
    built = yaml.safe_load(result.recipe.read_text())
    for manifest in built["Manifests"]:
        arch = manifest["Platform"]["architecture"]
        assert [a["URI"] for a in manifest["Artifacts"]] == [
            "s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/ggdefender.zip",
            f"s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/ggdefender-wheels-{arch}.zip"]
    assert b.lite_problems(built, result.recipe.stat().st_size) == []
    # the install step's recipe variable and the key it reads survive the build
    assert built["Lifecycle"]["all"]["install"]["Setenv"]["GGDEFENDER_INDEX_URL"] == "{configuration:/Install/IndexUrl}"
    assert built["ComponentConfiguration"]["DefaultConfiguration"]["Install"] == {"IndexUrl": ""}
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


def test_archives_are_reproducible(project):
    def digests(result):
        return [hashlib.sha256(p.read_bytes()).hexdigest() for p in (result.artifact, *result.wheel_artifacts.values())]

    assert digests(b.build(project)) == digests(b.build(project))


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


def _wheel_tags(name: str) -> tuple:
    """(python, abi, platform) tags of a wheel file name."""
    return tuple(name[:-len(".whl")].split("-")[-3:])


def _installs_on(wheel: str, tag: str) -> bool:
    """Whether a wheel's python/abi tags suit CPython `tag` (cp311): pure, that version, or an older abi3."""
    python, abi, _ = _wheel_tags(wheel)
    return any(p in ("py3", tag) or (abi == "abi3" and p.startswith("cp") and int(p[2:]) <= int(tag[2:]))
               for p in python.split("."))


def test_each_platform_zip_holds_wheels_for_every_python_and_only_its_own(project):
    """The wheels zips of the real build: a requirements file per supported Python naming only wheels the zip
    holds, each wheel for that platform's machine (or pure); on arm (armv7l) the declared fallbacks."""
    result = b.build(project)
    machines = {p.greengrass: p.machine for p in w.PLATFORMS}
    for arch, path in result.wheel_artifacts.items():
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            files = {n[len("wheels/"):] for n in names if n.startswith("wheels/")}
            reqs = {n: zf.read(n).decode() for n in names if n.startswith("requirements-")}
            assert sorted(reqs) == [f"requirements-cp{py.replace('.', '')}.txt" for py in w.PYTHONS]
            assert set(names) == set(reqs) | {f"wheels/{f}" for f in files}
            for wheel in files:
                _, abi, plat = _wheel_tags(wheel)
                assert plat == "any" or plat.endswith(machines[arch]), (arch, wheel)
                if plat == "any":  # a pure wheel holds no compiled file
                    with zipfile.ZipFile(io.BytesIO(zf.read(f"wheels/{wheel}"))) as inner:
                        assert not any(n.endswith(".so") for n in inner.namelist()), wheel
        for name, text in reqs.items():
            pins = [line for line in text.splitlines() if line and not line.startswith("#")]
            have = {w._wheel_pin(f) for f in files}
            assert pins and set(pins) <= have, (arch, name, set(pins) - have)
            tag = name[len("requirements-"):-len(".txt")]
            for pin in pins:  # each pin has a wheel that installs on that Python
                assert any(w._wheel_pin(f) == pin and _installs_on(f, tag) for f in files), (arch, tag, pin)
            if arch == "arm":
                assert not any(p.split("==")[0] in ("awscrt", "awsiotsdk", "psutil") for p in pins)
                assert "cbor2==5.9.0" in pins and "pyyaml==6.0.3" in pins
                assert "# awsiotsdk==1.31.0: left out, no wheel for arm (armv7l)" in text
                assert "# cbor2==5.9.0 instead of cbor2==6.3.0" in text
                assert "# PyYAML==6.0.3: pure-Python wheel" in text
            else:
                assert {"awsiotsdk==1.31.0", "awscrt==0.36.1", "cbor2==6.3.0", "psutil==7.2.2",
                        "pyyaml==6.0.3", "jsonschema==4.26.0"} <= set(pins)
                assert not any(line.startswith("# ") and "instead of" in line for line in text.splitlines())
    with zipfile.ZipFile(result.wheel_artifacts["arm"]) as zf:
        assert "wheels/pyyaml-6.0.3-py3-none-any.whl" in zf.namelist()
        assert "wheels/cbor2-5.9.0-py3-none-any.whl" in zf.namelist()


def test_a_missing_or_foreign_platform_manifest_is_refused(project):
    target = project / "recipes" / "ggdefender.Defender.yaml"
    source = target.read_text()
    recipe = yaml.safe_load(source)
    del recipe["Manifests"][2]
    target.write_text(yaml.safe_dump(recipe, sort_keys=False))
    with pytest.raises(b.BuildError, match="no manifest for architecture arm"):
        b.build(project)
    target.write_text(source.replace("ggdefender-wheels-aarch64.zip", "ggdefender-wheels-amd64.zip"))
    with pytest.raises(b.BuildError, match=r"the aarch64 manifest names artifacts \['ggdefender-wheels-amd64.zip', "
                                           r"'ggdefender.zip'\], it must name exactly"):
        b.build(project)
    target.write_text(source.replace("architecture: arm}", "architecture: riscv64}"))
    with pytest.raises(b.BuildError, match="Platform.architecture 'riscv64'; the build makes wheels for amd64, "
                                           "aarch64, arm only"):
        b.build(project)


def _make_wheel(folder: Path, name: str, version: str, tag: str, requires=()) -> str:
    """A minimal real wheel file (pip reads its METADATA); tag is python-abi-platform."""
    filename = f"{name}-{version}-{tag}.whl"
    info = f"{name}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + \
        "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(folder / filename, "w") as zf:
        zf.writestr(f"{name}/__init__.py", "")
        zf.writestr(f"{info}/METADATA", meta)
        zf.writestr(f"{info}/WHEEL", f"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: {tag}\n")
        zf.writestr(f"{info}/RECORD", "")
    return filename


@pytest.fixture
def index(tmp_path):
    """A local wheel index: `native` has wheels for x86_64 only, `needsnative` (pure) requires it, `both` has an
    x86_64 wheel of 2.0 and a pure 1.0; nothing here reaches the network (pip --no-index)."""
    folder = tmp_path / "index"
    folder.mkdir()
    _make_wheel(folder, "native", "1.0", "cp311-cp311-manylinux_2_17_x86_64")
    _make_wheel(folder, "needsnative", "1.0", "py3-none-any", ["native==1.0"])
    _make_wheel(folder, "both", "2.0", "cp311-cp311-manylinux_2_28_x86_64")
    _make_wheel(folder, "both", "1.0", "py3-none-any")
    _make_wheel(folder, "plain", "3.0", "py3-none-any")
    return ["--no-index", "--find-links", str(folder)]


X86, ARM = w.PLATFORMS[0], w.PLATFORMS[2]


def test_resolution_applies_the_declared_fallbacks_where_a_wheel_is_missing(index, tmp_path):
    pins = ["needsnative==1.0", "both==2.0", "plain==3.0"]
    fallbacks = {"needsnative": w.LeftOut("optional here"), "both": w.PureRelease("1.0", "pure one")}
    x86, _ = w.resolve(pins, X86, "3.11", cache=tmp_path / "c", fallbacks=fallbacks, index_args=index)
    assert x86.pins == ("both==2.0", "native==1.0", "needsnative==1.0", "plain==3.0") and x86.notes == ()
    arm, folder = w.resolve(pins, ARM, "3.11", cache=tmp_path / "c", fallbacks=fallbacks, index_args=index)
    assert arm.pins == ("both==1.0", "plain==3.0")
    assert arm.notes == (
        "needsnative==1.0: left out, no wheel for arm (armv7l), CPython 3.11 (optional here)",
        "both==1.0 instead of both==2.0, which has no wheel for arm (armv7l), CPython 3.11 (pure one)")
    assert sorted(arm.wheels) == sorted(p.name for p in folder.glob("*.whl")) == \
        ["both-1.0-py3-none-any.whl", "plain-3.0-py3-none-any.whl"]
    assert arm.requirements().splitlines()[1:] == ["# " + n for n in arm.notes] + list(arm.pins)


def test_a_missing_wheel_without_a_fallback_fails_naming_package_platform_and_python(index, tmp_path):
    with pytest.raises(w.WheelError, match=r"no wheel of needsnative==1.0 \(or of a requirement of it\) for arm "
                                           r"\(armv7l\), CPython 3.12, and it is not one of the optional or "
                                           r"pure-Python ones: .*native"):
        w.resolve(["plain==3.0", "needsnative==1.0"], ARM, "3.12", cache=tmp_path / "c", fallbacks={},
                  index_args=index)


def test_a_warm_cache_runs_no_pip(index, tmp_path, monkeypatch):
    first = w.resolve(["both==2.0"], X86, "3.11", cache=tmp_path / "c", fallbacks={}, index_args=index)

    def no_pip(*args, **kwargs):
        raise AssertionError("pip ran with a warm cache")

    monkeypatch.setattr(w, "_pip", no_pip)
    assert w.resolve(["both==2.0"], X86, "3.11", cache=tmp_path / "c", fallbacks={}, index_args=index) == first
    with pytest.raises(AssertionError, match="pip ran"):  # and the check can fail: another pin is not cached
        w.resolve(["plain==3.0"], X86, "3.11", cache=tmp_path / "c", fallbacks={}, index_args=index)


def test_an_index_that_answers_nothing_is_not_blamed_on_a_package(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(w.WheelError, match=r"none of the requirements resolves for amd64 \(x86_64\), CPython 3.11: "
                                           r"is the package index reachable"):
        w.resolve(["plain==3.0", "both==2.0"], X86, "3.11", cache=tmp_path / "c", fallbacks={},
                  index_args=["--no-index", "--find-links", str(empty)])


def test_the_pure_python_fallback_wheels_install_and_work_on_any_machine(project, tmp_path):
    """The arm zip's pure wheels (PyYAML built here without libyaml, re-tagged; cbor2's pure release) install
    with pip's own checks and work, without their extensions, on this machine's Python."""
    result = b.build(project)
    target = tmp_path / "site"
    with zipfile.ZipFile(result.wheel_artifacts["arm"]) as zf:
        for name in ("pyyaml-6.0.3-py3-none-any.whl", "cbor2-5.9.0-py3-none-any.whl"):
            (tmp_path / name).write_bytes(zf.read(f"wheels/{name}"))
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target",
                            str(target), str(tmp_path / name)], check=True, capture_output=True, timeout=120)
    code = ("import importlib.metadata as m, yaml, cbor2\n"
            "assert yaml.__with_libyaml__ is False and yaml.safe_load('a: [1, 2]') == {'a': [1, 2]}\n"
            "assert cbor2.loads(cbor2.dumps({'a': [1, b'x']})) == {'a': [1, b'x']}\n"
            "print(m.version('PyYAML'), m.version('cbor2'), yaml.__file__.startswith(%r))" % str(target))
    out = subprocess.run([sys.executable, "-S", "-c", code], env={**os.environ, "PYTHONPATH": str(target)},
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["6.0.3", "5.9.0", "True"], out.stderr
