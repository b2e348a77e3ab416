"""`ggdefender fleet run`: what it refuses before starting Flink (exit 2, naming the problem)."""

import json

from ggdefender import cli
from ggdefender.fleet import run_cli

PROFILE = {"securityProfileName": "P", "behaviors": [
    {"name": "ports", "metric": "aws:listening-tcp-ports",
     "criteria": {"comparisonOperator": "in-port-set", "value": {"ports": [22]}}}]}


def _files(tmp_path, profile=PROFILE):
    (tmp_path / "p.json").write_text(json.dumps(profile))
    (tmp_path / "in.jsonl").write_text("")
    return str(tmp_path / "p.json"), str(tmp_path / "in.jsonl")


def test_a_bad_profile_lists_every_problem(tmp_path, capsys):
    bad = {"securityProfileName": "P", "behaviors": [
        {"name": "a", "metric": "aws:all-bytes-out", "criteria": {"comparisonOperator": "less-than",
                                                                  "value": {"count": 1}}},
        {"name": "b", "metric": "aws:nope", "criteria": {}}]}
    p, i = _files(tmp_path, bad)
    assert cli.main(["fleet", "run", "--profile", p, "--input", i]) == 2
    err = capsys.readouterr().err
    assert "bad profile" in err and "(a).criteria.durationSeconds" in err and "(b)" in err


def test_missing_input_and_bad_flags_are_named(tmp_path, capsys):
    p, i = _files(tmp_path)
    assert cli.main(["fleet", "run", "--profile", p, "--input", str(tmp_path / "nope")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    assert cli.main(["fleet", "run", "--profile", p]) == 2
    assert "give --input PATH... or --local-root DIR" in capsys.readouterr().err
    assert cli.main(["fleet", "run", "--profile", p, "--socket", "localhost"]) == 2
    assert "expected HOST:PORT" in capsys.readouterr().err
    assert cli.main(["fleet", "run", "--profile", p, "--input", i, "--custom-metric", "cpu=float"]) == 2
    assert "--custom-metric 'cpu=float'" in capsys.readouterr().err
    assert cli.main(["fleet", "run", "--profile", p, "--local-root", str(tmp_path)]) == 2
    assert "no cloud/rules/*/messages.jsonl" in capsys.readouterr().err
    assert cli.main(["fleet", "run", "--profile", p, "--input", i, "--from-checkpoint", str(tmp_path)]) == 2
    assert "no completed checkpoint" in capsys.readouterr().err


def test_without_java_it_says_what_to_install(tmp_path, capsys, monkeypatch):
    p, i = _files(tmp_path)
    monkeypatch.setattr(run_cli.shutil, "which", lambda name: None)
    assert cli.main(["fleet", "run", "--profile", p, "--input", i]) == 2
    assert "apt-get install openjdk-17-jre-headless" in capsys.readouterr().err


def test_the_newest_checkpoint_is_found_under_a_checkpoint_directory(tmp_path):
    for n in (3, 12, 7):
        d = tmp_path / "job" / f"chk-{n}"
        d.mkdir(parents=True)
        (d / "_metadata").write_text("x")
    (tmp_path / "job" / "chk-40").mkdir()   # not completed: no _metadata
    assert run_cli.latest_checkpoint(str(tmp_path)).endswith("chk-12")
    assert run_cli.latest_checkpoint(str(tmp_path / "job" / "chk-3")).endswith("chk-3")
