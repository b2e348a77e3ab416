"""`ggdefender fleet package` (components/ggdefender/fleet/package.py): the Managed Service for Apache Flink zip
and the Act Lambda zip hold what their runtimes need, import with nothing else on the path, and are the same
bytes on every build. The Kinesis connector jar is not downloadable here: a dummy jar with a class under the
connector's package stands in for it (the zip carries whatever jar it is given)."""

import importlib.metadata as md
import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import real_counterparts

from ggdefender import cli
from ggdefender.fleet import package

ROOT = Path(__file__).resolve().parents[3]
PROFILE = ROOT / "docs" / "examples" / "fleet-profile.json"
SITE = Path(sysconfig.get_paths()["purelib"])
STDLIB_ONLY = [sys.executable, "-S", "-E", "-s"]  # no site-packages, no .pth (the editable install), no env


def _jar(path: Path, member: str = "org/apache/flink/connector/kinesis/sink/KinesisStreamsSink.class") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
        zf.writestr(member, b"\xca\xfe\xba\xbe")
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("package")
    jar = _jar(tmp / "connector.jar")
    made = package.build(jar, PROFILE, tmp / "out")
    return tmp, jar, made


def _names(path) -> list:
    with zipfile.ZipFile(path) as zf:
        return zf.namelist()


def _extract(path: Path, dest: Path) -> Path:
    with zipfile.ZipFile(path) as zf:
        zf.extractall(dest)
    return dest


def _provided_dir(dist: str, dest: Path) -> Path:
    """A directory with only `dist`'s and its requirements' top-level modules (links into the venv): what the
    runtime provides (boto3 on Lambda, apache-flink on MSF)."""
    try:
        md.distribution(dist)
    except md.PackageNotFoundError:
        real_counterparts.unavailable(dist, f"pip install -e '.[dev]' under Python 3.11 (it installs {dist})")
    dest.mkdir()
    wanted = package.distribution_closure([dist])
    for top, dists in md.packages_distributions().items():
        if any(package._norm(d) in wanted for d in dists):
            for candidate in (SITE / top, SITE / f"{top}.py"):
                if candidate.exists():
                    (dest / candidate.name).symlink_to(candidate)
            for so in SITE.glob(f"{top}.*.so"):
                (dest / so.name).symlink_to(so)
    return dest


# -- the Flink zip ----------------------------------------------------------------------------------------------
def test_the_flink_zip_has_the_mains_the_profile_the_jar_and_the_python_dir(built):
    tmp, jar, made = built
    zpath = made[package.FLINK_ZIP]["path"]
    names = _names(zpath)
    top = sorted(n for n in names if not n.startswith(package.PY_FILES))
    assert top == sorted([*package.JOBS, package.JARFILE, package.PROFILE])
    with zipfile.ZipFile(zpath) as zf:
        assert zf.read(package.JARFILE) == jar.read_bytes()
        assert zf.read(package.PROFILE) == PROFILE.read_bytes()
        for main, module in package.JOBS.items():
            source = zf.read(main).decode()
            compile(source, main, "exec")
            assert f'runpy.run_module("{module}", run_name="__main__"' in source
    for module in package.JOBS.values():
        assert package.PY_FILES + module.replace(".", "/") + ".py" in names
    assert package.PY_FILES + "ddsketch/ddsketch.py" in names  # vendored: MSF does not have it
    assert not [n for n in names if n.endswith(package.BINARY_SUFFIXES + (".pyc",)) or "__pycache__" in n]
    # nothing of the device runtime that the jobs do not import
    for part in ("supervisor", "remediation", "local", "plugins", "devtools", "collector/process.py",
                 "collector/service.py", "fleet/act.py", "pyflink", "cbor2", "psutil"):
        assert not [n for n in names if n.startswith(f"{package.PY_FILES}ggdefender/{part}")
                    or n.startswith(f"{package.PY_FILES}{part}")], part


def test_the_jobs_import_from_the_flink_zip_with_only_what_msf_provides(built, tmp_path):
    tmp, _, made = built
    unpacked = _extract(Path(made[package.FLINK_ZIP]["path"]), tmp_path / "app")
    provided = _provided_dir(package.FLINK_PROVIDED, tmp_path / "provided")
    code = f"""
import importlib, json, sys
sys.path[:0] = [{str(unpacked / package.PY_FILES)!r}, {str(provided)!r}]
for m in {list(package.JOBS.values())!r} + ["ddsketch", "boto3", "pyflink.datastream"]:
    importlib.import_module(m)
print(json.dumps({{m: getattr(mod, "__file__", None) for m, mod in sys.modules.items()}}))
"""
    run = subprocess.run(STDLIB_ONLY + ["-c", code], capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    files = json.loads(run.stdout)
    for name in ("ggdefender.fleet.stream_job", "ggdefender.fleet.baselines_job", "ddsketch", "boto3", "botocore"):
        assert files[name].startswith(str(unpacked)), (name, files[name])
    assert files["pyflink"].startswith(str(provided))


def test_the_main_file_runs_its_job_as_main_from_the_zip_directory(built, tmp_path):
    # the baselines main with no properties file and no arguments: the job's own usage error, run from the
    # zip's directory (relative paths in the properties are the zip's files)
    tmp, _, made = built
    unpacked = _extract(Path(made[package.FLINK_ZIP]["path"]), tmp_path / "app")
    provided = _provided_dir(package.FLINK_PROVIDED, tmp_path / "provided")
    code = (f"import runpy, sys; sys.path.insert(0, {str(provided)!r}); sys.argv = ['x', '--help']; "
            f"runpy.run_path({str(unpacked / package.BASELINES_MAIN)!r}, run_name='__main__')")
    run = subprocess.run(STDLIB_ONLY + ["-c", code], capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "--profile" in run.stdout and "--state" in run.stdout


# -- the Lambda zip ---------------------------------------------------------------------------------------------
def test_the_lambda_zip_holds_the_handler_and_what_it_imports_but_not_boto3(built):
    names = _names(built[2][package.LAMBDA_ZIP]["path"])
    assert "ggdefender/fleet/act.py" in names and "ggdefender/remediation/job_document.schema.json" in names
    assert "jsonschema/validators.py" in names  # the job document's check, imported on first use
    assert not [n for n in names if n.startswith(("boto3/", "botocore/", "ggdefender/fleet/stream_job",
                                                  "ggdefender/local/", "ggdefender/supervisor/", "pyflink"))]
    assert not [n for n in names if n.startswith(package.PY_FILES) or "__pycache__" in n]


def test_the_lambda_handler_runs_from_the_zip_with_only_boto3_against_moto(built, tmp_path):
    unpacked = _extract(Path(built[2][package.LAMBDA_ZIP]["path"]), tmp_path / "task")  # as Lambda's /var/task
    provided = _provided_dir(package.LAMBDA_PROVIDED, tmp_path / "runtime")
    settings = {"Findings": {"AwsAccountId": "123456789012", "Region": "eu-west-1"},
                "Remediation": {"Jobs": {"Seed/ports": "stop-listener"},
                                "Quarantine": {"ThingGroup": "ggdefender-quarantine", "Behaviors": ["ports"]}}}
    violation = {"violationId": "v-1", "thingName": "gw-1", "securityProfileName": "Seed",
                 "behavior": {"name": "ports", "metric": "aws:listening-tcp-ports"},
                 "metricValue": {"ports": [22, 8888]}, "offendingValues": [8888],
                 "violationEventType": "in-alarm", "violationEventTime": 1764000000.0}
    code = f"""
import base64, importlib, json, os, sys
sys.path[:0] = [{str(unpacked)!r}, {str(provided)!r}]
act = importlib.import_module("ggdefender.fleet.act")  # what Lambda does with the handler's module
import jsonschema  # the zip's, as the first CreateJob would import it
import boto3  # the runtime's, as the handler's default clients would import it
before = {{m: getattr(mod, "__file__", None) for m, mod in sys.modules.items()}}
sys.path.append({str(SITE)!r})  # now moto, to answer boto3's calls (it is no part of the function)
from moto import mock_aws
with mock_aws():
    iot = boto3.client("iot", region_name="eu-west-1")
    iot.create_thing(thingName="gw-1")
    iot.create_thing_group(thingGroupName="ggdefender-quarantine")
    event = {{"Records": [{{"kinesis": {{"sequenceNumber": "1",
              "data": base64.b64encode(json.dumps({violation!r}).encode()).decode()}}}}]}}
    out = act.lambda_handler(event, None)
    found = boto3.client("securityhub", region_name="eu-west-1").get_findings()["Findings"]
    jobs = iot.list_jobs()["jobs"]
    members = iot.list_things_in_thing_group(thingGroupName="ggdefender-quarantine")["things"]
print(json.dumps({{"before": before, "failures": out["batchItemFailures"], "findings": len(found),
                  "jobs": [j["jobId"] for j in jobs], "members": members}}))
"""
    env = {"PATH": os.environ.get("PATH", ""), act_env(): json.dumps(settings), "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "eu-west-1"}
    run = subprocess.run([sys.executable, "-S", "-s", "-c", code], capture_output=True, text=True, timeout=240,
                         cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout)
    for name in ("ggdefender.fleet.act", "ggdefender.remediation.documents", "jsonschema", "rpds"):
        assert out["before"][name].startswith(str(unpacked)), (name, out["before"][name])
    assert out["before"]["boto3"].startswith(str(provided)) and out["before"]["botocore"].startswith(str(provided))
    assert out["failures"] == [] and out["findings"] == 1
    assert len(out["jobs"]) == 1 and out["jobs"][0].startswith("ggdefender-") and out["members"] == ["gw-1"]


def act_env() -> str:
    from ggdefender.fleet import act

    return act.SETTINGS_ENV


# -- reproducible, and bad input ------------------------------------------------------------------------------
def test_the_zips_are_the_same_bytes_on_every_build(built, tmp_path):
    _, jar, made = built
    again = package.build(jar, PROFILE, tmp_path / "again")
    for name in (package.FLINK_ZIP, package.LAMBDA_ZIP):
        assert again[name]["sha256"] == made[name]["sha256"]
        with zipfile.ZipFile(again[name]["path"]) as zf:
            assert {i.date_time for i in zf.infolist()} == {package.ZIP_TIME}
            assert [i.filename for i in zf.infolist()] == sorted(i.filename for i in zf.infolist())


def test_the_command_writes_both_zips(built, tmp_path, capsys):
    _, jar, _ = built
    rc = cli.main(["fleet", "package", "--kinesis-connector-jar", str(jar), "--profile", str(PROFILE),
                   "--out", str(tmp_path / "o")])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(out) == sorted([package.FLINK_ZIP, package.LAMBDA_ZIP])
    assert all(Path(v["path"]).is_file() for v in out.values())


@pytest.mark.parametrize("case, needle", [("missing", "no such file"), ("not-a-jar", "not a jar file"),
                                          ("other-jar", "no Kinesis connector classes")])
def test_a_wrong_jar_is_refused_naming_the_maven_coordinates(tmp_path, capsys, case, needle):
    jar = tmp_path / "c.jar"
    if case == "not-a-jar":
        jar.write_text("hello")
    elif case == "other-jar":
        _jar(jar, "org/apache/flink/connector/kafka/Kafka.class")
    rc = cli.main(["fleet", "package", "--kinesis-connector-jar", str(jar), "--profile", str(PROFILE),
                   "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and package.CONNECTOR_MAVEN in err
    assert not (tmp_path / "o" / package.FLINK_ZIP).exists()


def test_a_bad_profile_is_refused_with_the_parsers_message(built, tmp_path, capsys):
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"securityProfileName": "x", "behaviors": [{"name": "b"}]}))
    rc = cli.main(["fleet", "package", "--kinesis-connector-jar", str(built[1]), "--profile", str(bad),
                   "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and str(bad) in err and "b" in err
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_a_binary_dependency_the_lambda_runtime_cannot_load_is_refused():
    assert package.lambda_loads("cp311-cp311-manylinux_2_17_x86_64")
    assert package.lambda_loads("cp311-abi3-manylinux2014_x86_64")
    assert not package.lambda_loads("cp311-cp311-manylinux_2_28_x86_64")  # Amazon Linux 2 has glibc 2.26
    assert not package.lambda_loads("cp312-cp312-manylinux_2_17_x86_64")
    assert not package.lambda_loads("cp311-cp311-manylinux_2_17_aarch64")
