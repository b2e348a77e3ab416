"""The `ggdefender` entry point imports every part that ships normally: only the subcommands the device artifact
leaves out (build.EXCLUDED_DIRS) may be absent, and asking for one there is a clear error, not silence."""

import builtins

import pytest

from ggdefender import build, cli


def test_the_subcommands_left_out_of_the_artifact_are_what_the_build_excludes():
    packages = {module.split(".")[1] for module in cli.NOT_IN_ARTIFACT.values()}
    assert packages == build.EXCLUDED_DIRS - {"__pycache__"}
    assert set(cli.NOT_IN_ARTIFACT) <= set(cli.SUBCOMMANDS)


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


def test_a_missing_part_that_always_ships_is_an_error(monkeypatch):
    _without(monkeypatch, "ggdefender.detect.cli")
    with pytest.raises(ModuleNotFoundError, match="ggdefender.detect.cli"):
        cli.main(["detect", "--help"])
