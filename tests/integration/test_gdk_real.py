"""The real gdk CLI (1.6.2) on a clean copy of the project: `gdk component build` gives the tree `ggdefender
build` gives, and `gdk component publish` uploads every artifact (the code zip and each platform's wheels zip)
and creates the component version from the built recipe, with every AWS call answered in-process
(gdk_publish_child.py) and nothing leaving the machine (the wheels come from the build's cache, filled first)."""

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import gdk_cli
from ggdefender.devtools import build as b
from project_copy import copy_project

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
NAME, VERSION, ARCHIVE = "ggdefender.Defender", "1.0.0", "ggdefender.zip"
WHEELS = {arch: f"ggdefender-wheels-{arch}.zip" for arch in ("amd64", "aarch64", "arm")}
ARCHIVES = sorted([ARCHIVE, *WHEELS.values()])


def _closed_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    """gdk's environment: the venv's python3 first on PATH (gdk's custom build runs `python3 .../build.py`), no
    AWS profile of the machine, and HTTP(S) through a closed loopback port, so gdk's GitHub version check (and
    anything else that would leave the machine) fails at once and offline."""
    proxy = f"http://127.0.0.1:{_closed_loopback_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k.lower() not in ("no_proxy",)}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", HTTP_PROXY=proxy,
               HTTPS_PROXY=proxy, http_proxy=proxy, https_proxy=proxy, AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
               AWS_EC2_METADATA_DISABLED="true",
               AWS_DEFAULT_REGION="eu-west-1")  # not gdk-config's region: the calls must go where gdk-config says
    return env


def _gdk(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*gdk_cli.command(), *args], cwd=project, env=_env(), capture_output=True, text=True,
                          timeout=300)


def _publish(project: Path, tmp_path: Path) -> tuple:
    out = tmp_path / "sent.json"
    run = subprocess.run([sys.executable, str(HERE / "gdk_publish_child.py"), str(out), "component", "publish"],
                         cwd=project, env=_env(), capture_output=True, text=True, timeout=300)
    assert out.is_file(), run.stdout + run.stderr
    return run, json.loads(out.read_text())


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _warm_wheel_cache(tmp_path: Path) -> None:
    """gdk runs offline (_env): the build's wheel cache is filled first, with the network, by a build of our own."""
    b.build(copy_project(tmp_path / "warm"))


@pytest.fixture
def built(tmp_path):
    gdk_cli.require()
    _warm_wheel_cache(tmp_path)
    project = copy_project(tmp_path / "project")
    run = _gdk(project, "component", "build")
    assert run.returncode == 0, run.stdout + run.stderr
    return project


def test_gdk_build_and_ggdefender_build_give_the_same_tree(built, tmp_path):
    ours = copy_project(tmp_path / "ours")
    subprocess.run([sys.executable, "-m", "ggdefender", "build", "--root", str(ours)], check=True,
                   capture_output=True, timeout=120)
    gdk_tree = _tree(built / "greengrass-build")
    assert gdk_tree == _tree(ours / "greengrass-build")
    # the recipe is where gdk's publish will look: the name of recipe.yaml's link target
    assert f"recipes/{os.path.basename(os.readlink(built / 'recipe.yaml'))}" in gdk_tree
    assert sorted(k.rsplit("/", 1)[-1] for k in gdk_tree if k.startswith(f"artifacts/{NAME}/")) == ARCHIVES


def test_gdk_publish_uploads_the_artifact_and_creates_the_version_from_the_built_recipe(built, tmp_path):
    run, sent = _publish(built, tmp_path)
    assert sent["exit"] == 0, run.stdout + run.stderr
    publish = json.loads((built / "gdk-config.json").read_text())["component"][NAME]["publish"]
    # gdk's bucket: the configured prefix, the region and the account (here moto's)
    bucket = f"{publish['bucket']}-{publish['region']}-{sent['account']}"
    assert list(sent["s3"]) == [bucket] and sent["s3"][bucket]["region"] == publish["region"]
    # every artifact, each byte for byte
    assert sorted(sent["s3"][bucket]["keys"]) == [f"{NAME}/{VERSION}/{a}" for a in ARCHIVES]
    for name in ARCHIVES:
        artifact = built / "greengrass-build" / "artifacts" / NAME / VERSION / name
        assert base64.b64decode(sent["s3"][bucket]["keys"][f"{NAME}/{VERSION}/{name}"]) == artifact.read_bytes()

    creates = [c for c in sent["greengrassv2"] if c["operation"] == "CreateComponentVersion"]
    assert len(creates) == 1 and f"greengrass.{publish['region']}.amazonaws.com" in creates[0]["url"]
    inline = yaml.safe_load(base64.b64decode(creates[0]["body"]["inlineRecipe"]))
    expected = yaml.safe_load((built / "greengrass-build" / "recipes" / f"{NAME}.yaml").read_text())
    assert [m["Platform"]["architecture"] for m in expected["Manifests"]] == list(WHEELS)
    for manifest in expected["Manifests"]:  # each manifest names the code zip and its own platform's wheels
        names = [ARCHIVE, WHEELS[manifest["Platform"]["architecture"]]]
        assert [a["URI"] for a in manifest["Artifacts"]] == [f"s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/{n}"
                                                             for n in names]
        for art, name in zip(manifest["Artifacts"], names):
            art["URI"] = f"s3://{bucket}/{NAME}/{VERSION}/{name}"  # the one change publish makes
    assert inline == expected
    # and the recipe it sent is the one it wrote beside the built one
    assert yaml.safe_load((built / "greengrass-build" / "recipes" / f"{NAME}-{VERSION}.yaml").read_text()) == inline


def test_publish_of_a_recipe_gdk_rejects_creates_no_version(tmp_path):
    """gdk uploads the artifacts first and validates the recipe after (PublishCommand), so the zip does reach
    S3; what must not happen is a component version from an invalid recipe."""
    gdk_cli.require()
    _warm_wheel_cache(tmp_path)
    project = copy_project(tmp_path / "project")
    source = project / "recipes" / f"{NAME}.yaml"
    source.write_text(source.read_text().replace("Unarchive: ZIP", "Unarchive: TAR"))
    assert _gdk(project, "component", "build").returncode == 0  # a custom build validates nothing in gdk
    run, sent = _publish(project, tmp_path)
    assert sent["exit"] == 1
    assert "Failed to publish a new version '1.0.0' of the component 'ggdefender.Defender'" in run.stderr + run.stdout
    assert "'TAR' does not match '(?i)^(ZIP|NONE)$'" in run.stderr + run.stdout
    assert [c["operation"] for c in sent["greengrassv2"]] == ["ListComponentVersions"]
    (bucket,) = sent["s3"]
    assert sorted(sent["s3"][bucket]["keys"]) == [f"{NAME}/{VERSION}/{a}" for a in ARCHIVES]
