"""`ggdefender collect`: bad input is one clear line and a non-zero status, never a traceback or a busy loop."""

import json
from pathlib import Path

import pytest

from ggdefender.cli import main

PROC = Path(__file__).resolve().parents[2] / "data" / "proc"


def run(capsys, *args):
    code = main(["collect", "--once", "--no-custom-metrics", "--proc-root", str(PROC / "basic"), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_once_prints_a_report_from_a_fixture_tree(capsys):
    code, out, err = run(capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["header"]["version"] == "1.0" and "metrics" in report


@pytest.mark.parametrize("content, why", [
    ("[1\n", "not valid JSON or YAML"),
    ("[1, 2]\n", "expected an object with configuration sections"),
    ("Collector: {ReportFormat: xml}\n", "Collector.ReportFormat"),
])
def test_bad_config_file_is_a_clear_error(tmp_path, capsys, content, why):
    path = tmp_path / "config.yaml"
    path.write_text(content)
    code, out, err = run(capsys, "--config", str(path))
    assert code == 2 and out == ""
    assert why in err and "Traceback" not in err


def test_missing_config_file_is_a_clear_error(tmp_path, capsys):
    code, _, err = run(capsys, "--config", str(tmp_path / "absent.yaml"))
    assert code == 2
    assert f"--config {tmp_path / 'absent.yaml'}: No such file or directory" in err


def test_invalid_plugins_section_is_refused_not_replaced_by_defaults(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"Plugins": {"Builtins": {"cpu_usage": {"Enabled": "maybe"}}}}))
    code = main(["collect", "--once", "--proc-root", str(PROC / "basic"), "--config", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "Plugins.Builtins.cpu_usage.Enabled" in err


def test_invalid_plugin_option_value_exits_2_as_documented(tmp_path, capsys):
    # docs/metrics.md: an invalid value in either section exits 2; a plugin's own option is one
    path = tmp_path / "config.yaml"
    path.write_text("Plugins:\n  Builtins:\n    cpu_usage: {MinIntervalSeconds: soon}\n")
    code = main(["collect", "--once", "--proc-root", str(PROC / "basic"), "--config", str(path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Plugins.Builtins.cpu_usage: MinIntervalSeconds: expected a number" in err


def test_misspelled_section_and_key_are_named_with_what_was_meant(tmp_path, capsys, caplog):
    path = tmp_path / "config.yaml"
    path.write_text("Pluginz: {}\nCollector: {SampleIntervalSecond: 600}\n")
    code, out, err = run(capsys, "--config", str(path))
    assert code == 0, err
    err = caplog.text  # logged warnings (stderr outside pytest)
    assert "Pluginz: unknown top-level configuration section ignored (did you mean Plugins?)" in err
    assert "Collector.SampleIntervalSecond: unknown key ignored (did you mean SampleIntervalSeconds?)" in err


def test_unwritable_output_is_a_clear_error(tmp_path, capsys):
    code, _, err = run(capsys, "--output", str(tmp_path))  # a folder, not a file
    assert code == 1
    assert f"cannot write --output {tmp_path}" in err and "Traceback" not in err


@pytest.mark.parametrize("flag, value", [
    ("--interval", "-1"), ("--interval", "0"), ("--interval", "nan"),
    ("--network-window", "-5"), ("--network-window", "inf"), ("--network-window", "abc"),
])
def test_interval_and_window_must_be_sane(capsys, flag, value):
    # a negative loop interval used to print reports in a tight loop
    with pytest.raises(SystemExit) as exc:
        main(["collect", flag, value])
    assert exc.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err
