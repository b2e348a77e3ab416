"""The `ggdefender` entry point imports every part that ships normally: only the developer tools the device
artifact leaves out (build.EXCLUDED_DIRS) may be absent, and asking for one there is a clear error, not silence;
the processes that run on a device (A: supervisor, B: collector process) never import them."""

import builtins
import json
import subprocess
import sys

import pytest

from ggdefender import cli
from ggdefender.devtools import build


def test_the_commands_left_out_of_the_artifact_are_what_the_build_excludes():
    packages = {module.split(".")[1] for module in cli.NOT_IN_ARTIFACT.values()}
    assert packages == build.EXCLUDED_DIRS - {"__pycache__"}
    assert {command.split()[0] for command in cli.NOT_IN_ARTIFACT} <= set(cli.SUBCOMMANDS)
    # a whole subcommand left out is one whose module lives in the left-out package
    for command, package in cli.NOT_IN_ARTIFACT.items():
        if command in cli.SUBCOMMANDS:
            assert cli.SUBCOMMANDS[command].startswith(package + ".")


def test_processes_a_and_b_never_import_a_developer_tool():
    """What runs on a device: its entry modules (and the `ggdefender` entry point) load nothing the artifact lacks,
    nor the developer tools' own libraries."""
    left_out = sorted(set(cli.NOT_IN_ARTIFACT.values()))
    code = ("import json, sys\n"
            "import ggdefender.cli, ggdefender.supervisor.run, ggdefender.collector.process, ggdefender.detect.cli\n"
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    loaded = json.loads(out.stdout)
    assert "ggdefender.collector.process" in loaded and "ggdefender.supervisor.run" in loaded  # the probe imported
    bad = [m for m in loaded for p in left_out + ["matplotlib", "orjson"] if m == p or m.startswith(p + ".")]
    assert bad == []


def _without(monkeypatch, missing):
    """Import as on a device whose artifact lacks the package `missing`."""
    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == missing or name.startswith(missing + "."):
            raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    monkeypatch.setattr(cli.importlib, "import_module", lambda name: fake(name, fromlist=["_"]))


def test_a_left_out_subcommand_is_a_clear_error_and_help_lists_the_rest(monkeypatch, capsys):
    _without(monkeypatch, "ggdefender.local")
    assert cli.main(["local", "up"]) == 2
    assert "`ggdefender local` is not in this installation" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("    ")]
    assert "collect" in listed and "detect" in listed and "local" not in listed


def test_developer_tools_on_a_device_are_a_clear_error(monkeypatch, capsys, tmp_path):
    _without(monkeypatch, "ggdefender.devtools")
    assert cli.main(["build"]) == 2
    err = capsys.readouterr().err
    assert "`ggdefender build` is not in this installation: it is a developer tool" in err
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps({"securityProfileName": "p", "behaviors": []}))
    assert cli.main(["detect", "replay", "--profile", str(profile), "--reports", str(tmp_path)]) == 2
    assert "`ggdefender detect replay` is not in this installation: it is a developer tool" in capsys.readouterr().err
    assert cli.main(["detect", "validate", "--profile", str(profile)]) == 0  # validate ships
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("    ")]
    assert "detect" in listed and "build" not in listed


def test_a_missing_part_that_always_ships_is_an_error(monkeypatch):
    _without(monkeypatch, "ggdefender.detect.cli")
    with pytest.raises(ModuleNotFoundError, match="ggdefender.detect.cli"):
        cli.main(["detect", "--help"])
