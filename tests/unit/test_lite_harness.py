"""The nucleus lite harness's own rules (tests/lite/harness.py): what makes lite unavailable (a skip on a user's
machine, a failure in CI) versus a build that is broken."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lite"))
import harness  # noqa: E402  (tests/lite is not a package)


def test_not_root_means_unavailable_with_the_reason(monkeypatch):
    monkeypatch.setattr(harness.os, "geteuid", lambda: 1000)
    with pytest.raises(harness.LiteUnavailable, match="needs root"):
        harness.check_host()


def test_a_missing_tool_is_named_with_its_package(monkeypatch):
    monkeypatch.setattr(harness.os, "geteuid", lambda: 0)
    monkeypatch.setattr(harness.shutil, "which", lambda tool: None if tool == "mosquitto" else f"/usr/bin/{tool}")
    with pytest.raises(harness.LiteUnavailable, match="no 'mosquitto': install the Debian package mosquitto"):
        harness.check_host()


@pytest.mark.parametrize("code, error", [(3, harness.LiteUnavailable), (1, RuntimeError)])
def test_the_build_scripts_exit_code_tells_missing_from_broken(tmp_path, monkeypatch, code, error):
    script = tmp_path / "build.sh"
    script.write_text(f"echo 'build_lite: no cmake' >&2\nexit {code}\n")
    monkeypatch.setattr(harness, "BUILD_SCRIPT", script)
    with pytest.raises(error, match="no cmake") as info:
        harness.build()
    assert type(info.value) is error


def test_a_recipes_zip_artifacts_are_the_ones_marked_unarchive_zip(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("ComponentName: a.B\nComponentVersion: 1.0.0\nManifests:\n"
                      "  - Artifacts:\n      - {URI: 's3://x/a.zip', Unarchive: ZIP}\n      - {URI: 's3://x/b.py'}\n")
    assert harness.Component(recipe).selected_artifacts() == {"a.zip": "ZIP", "b.py": "NONE"}


def test_only_the_manifest_lite_selects_is_deployed(tmp_path, monkeypatch):
    # lite downloads the artifacts of the one manifest matching its architecture, never another platform's
    recipe = tmp_path / "r.yaml"
    recipe.write_text("ComponentName: a.B\nComponentVersion: 1.0.0\nManifests:\n"
                      "  - Platform: {os: linux, runtime: '*', architecture: aarch64}\n"
                      "    Artifacts: [{URI: 's3://x/code.zip', Unarchive: ZIP}, {URI: 's3://x/w-aarch64.zip', Unarchive: ZIP}]\n"
                      "  - Platform: {os: linux, runtime: '*', architecture: amd64}\n"
                      "    Artifacts: [{URI: 's3://x/code.zip', Unarchive: ZIP}, {URI: 's3://x/w-amd64.zip', Unarchive: ZIP}]\n")
    monkeypatch.setattr(harness, "current_platform", lambda: {"os": "linux", "architecture": "amd64"})
    assert harness.Component(recipe).selected_artifacts() == {"code.zip": "ZIP", "w-amd64.zip": "ZIP"}
    monkeypatch.setattr(harness, "current_platform", lambda: {"os": "linux", "architecture": "riscv64"})
    with pytest.raises(Exception, match="no manifest matches"):
        harness.Component(recipe).selected_artifacts()
