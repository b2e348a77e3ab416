"""The fleet tier's CloudFormation template (components/ggdefender/fleet/cloudformation.yaml).

cfn-lint (the real one, pinned in the dev extra) checks it against CloudFormation's resource schemas; these
tests check what cfn-lint does not: every IAM action exists in botocore's service models and none is a
wildcard, resources are `*` only where the service has nothing narrower, the rule's SQL is the one
docs/fleet.md documents, the Flink run options name the paths `ggdefender fleet package` writes, the property
names are the ones the jobs read, the scheduler's universal target calls a real operation with a valid input,
and the Lambda function runs the handler that exists with the settings variable it reads."""

import json
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import aws_models
import botocore.session
import pytest
import real_counterparts
import yaml

from ggdefender.fleet import act, package

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = ROOT / "components" / "ggdefender" / "fleet" / "cloudformation.yaml"
FLEET_DOC = ROOT / "docs" / "fleet.md"
CFN_LINT = "1.58.0"

# IAM actions that are no API operation of their own: the operation each one authorizes (IAM's service
# authorization reference names them; botocore has the operation)
IAM_ONLY = {
    "s3:ListBucket": "ListObjectsV2",
    "s3:ListBucketMultipartUploads": "ListMultipartUploads",
}
# statements whose Resource may be "*": a KMS key policy's "*" is the key itself
RESOURCE_STAR = {("DataKey", "AccountAdministersAndDelegatesToIam")}


# -- loading ----------------------------------------------------------------------------------------------------
class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags as their long form (!Ref x -> {"Ref": x})."""


def _tag(loader, suffix, node):
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        return {name: value.split(".", 1) if suffix == "GetAtt" else value}
    if isinstance(node, yaml.SequenceNode):
        return {name: loader.construct_sequence(node, deep=True)}
    return {name: loader.construct_mapping(node, deep=True)}


_CfnLoader.add_multi_constructor("!", _tag)


@lru_cache(maxsize=1)
def template() -> dict:
    return yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)


def resources(kind: str) -> dict:
    return {name: r for name, r in template()["Resources"].items() if r["Type"] == kind}


def statements():
    """(resource, policy label, statement) for every IAM policy document in the template."""
    for name, res in template()["Resources"].items():
        props = res.get("Properties", {})
        docs = []
        if res["Type"] == "AWS::IAM::Role":
            docs.append(("trust", props["AssumeRolePolicyDocument"]))
            docs += [(p["PolicyName"], p["PolicyDocument"]) for p in props.get("Policies", [])]
        elif res["Type"] == "AWS::S3::BucketPolicy":
            docs.append(("bucket policy", props["PolicyDocument"]))
        elif res["Type"] == "AWS::KMS::Key":
            docs.append(("key policy", props["KeyPolicy"]))
        for label, doc in docs:
            for st in doc["Statement"]:
                yield name, label, st


def _listed(value):
    return value if isinstance(value, list) else [value]


@lru_cache(maxsize=1)
def operations_by_iam_prefix() -> dict:
    """IAM prefix -> every operation of the botocore services signed with it (kinesisanalytics covers
    kinesisanalyticsv2; iot covers iot, iot-data, iot-jobs-data ...)."""
    session = botocore.session.get_session()
    out: dict = {}
    for service in session.get_available_services():
        model = session.get_service_model(service)
        prefix = model.metadata.get("signingName") or model.metadata["endpointPrefix"]
        out.setdefault(prefix, set()).update(model.operation_names)
    return out


def property_group(app: str, group: str) -> dict:
    groups = template()["Resources"][app]["Properties"]["ApplicationConfiguration"]["EnvironmentProperties"]
    return next(g["PropertyMap"] for g in groups["PropertyGroups"] if g["PropertyGroupId"] == group)


# -- cfn-lint ---------------------------------------------------------------------------------------------------
def _cfn_lint(path: Path) -> subprocess.CompletedProcess:
    try:
        import cfnlint.version
    except ImportError:
        real_counterparts.unavailable("cfn-lint", f"pip install cfn-lint=={CFN_LINT} (in the dev extra: "
                                                  "pip install -e '.[dev]')")
    assert cfnlint.version.__version__ == CFN_LINT, f"cfn-lint {cfnlint.version.__version__}, pinned {CFN_LINT}"
    # cfn-lint's console script is this (the package has no __main__)
    command = "import sys; from cfnlint.runner import main; sys.argv[0] = 'cfn-lint'; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", command, "--format", "parseable", "--", str(path)],
                          capture_output=True, text=True, timeout=300)


def test_cfn_lint_finds_no_error_and_no_warning():
    run = _cfn_lint(TEMPLATE)
    assert run.returncode == 0 and not run.stdout.strip(), run.stdout + run.stderr


def test_cfn_lint_does_fail_a_template_that_is_wrong(tmp_path):
    # the run above can fail: a runtime Managed Service for Apache Flink does not have is an error
    broken = tmp_path / "broken.yaml"
    broken.write_text(TEMPLATE.read_text().replace("RuntimeEnvironment: FLINK-1_20", "RuntimeEnvironment: FLINK-9_99", 1))
    run = _cfn_lint(broken)
    assert run.returncode != 0 and "FLINK-9_99" in run.stdout, run.stdout + run.stderr


# -- IAM --------------------------------------------------------------------------------------------------------
def test_every_iam_action_is_an_operation_in_botocores_models_and_none_is_a_wildcard():
    ops = operations_by_iam_prefix()
    seen = 0
    for name, label, st in statements():
        for action in _listed(st["Action"]):
            seen += 1
            where = f"{name} ({label}, {st.get('Sid', '')}): {action}"
            prefix, _, op = action.partition(":")
            if st["Effect"] == "Deny" and op == "*":
                continue  # denying a whole service (TLS only) is the narrowest deny there is
            assert "*" not in action and "?" not in action, f"{where}: an allow names actions, never a pattern"
            assert prefix in ops, f"{where}: no botocore service is signed as {prefix!r}"
            assert IAM_ONLY.get(action, op) in ops[prefix], f"{where}: {prefix} has no operation {op}"
    assert seen > 40


def test_allow_statements_name_resources_and_star_only_where_the_service_has_nothing_narrower():
    for name, label, st in statements():
        if label == "trust" or st["Effect"] != "Allow":
            continue
        for resource in _listed(st["Resource"]):
            if resource == "*":
                assert (name, st.get("Sid")) in RESOURCE_STAR, f"{name} ({label}): Resource '*'"


# the ARN service of each CloudFormation type a statement names with !GetAtt X.Arn
ARN_SERVICE = {"AWS::Kinesis::Stream": "kinesis", "AWS::S3::Bucket": "s3", "AWS::KMS::Key": "kms",
               "AWS::Logs::LogGroup": "logs", "AWS::SQS::Queue": "sqs"}


def _arn_service(resource):
    if isinstance(resource, dict) and "Fn::GetAtt" in resource:
        return ARN_SERVICE[template()["Resources"][resource["Fn::GetAtt"][0]]["Type"]]
    text = resource["Fn::Sub"] if isinstance(resource, dict) else resource
    m = re.match(r"(\$\{[A-Za-z]+\.Arn\})|arn:\$\{AWS::Partition\}:([a-z0-9-]+):", text)
    assert m, f"not an ARN: {text}"
    if m.group(1):  # ${Bucket.Arn}/prefix/*
        return ARN_SERVICE[template()["Resources"][m.group(1)[2:-5]]["Type"]]
    return m.group(2)


def test_each_allowed_action_names_resources_of_its_own_service():
    for name, label, st in statements():
        if label == "trust" or st["Effect"] != "Allow" or st["Resource"] == "*":
            continue
        prefixes = {a.split(":")[0] for a in _listed(st["Action"])}
        services = {_arn_service(r) for r in _listed(st["Resource"])}
        assert services == prefixes, f"{name} ({label}, {st.get('Sid', '')}): {prefixes} on {services}"


def test_roles_trust_only_their_service_within_this_account():
    for name, res in resources("AWS::IAM::Role").items():
        (st,) = res["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert st["Action"] == "sts:AssumeRole" and list(st["Principal"]) == ["Service"], name
        if st["Principal"]["Service"] != "lambda.amazonaws.com":  # Lambda's trust takes no such condition
            assert "Condition" in st, f"{name}: trust without aws:SourceAccount / sts:ExternalId (confused deputy)"


def test_the_bucket_is_encrypted_private_and_tls_only():
    (bucket,) = resources("AWS::S3::Bucket").values()
    props = bucket["Properties"]
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"][
        "SSEAlgorithm"] == "aws:kms"
    assert all(props["PublicAccessBlockConfiguration"].values())
    (policy,) = resources("AWS::S3::BucketPolicy").values()
    (st,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert st["Effect"] == "Deny" and st["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


# -- what the template and the code must agree on -----------------------------------------------------------
def _documented_rule() -> dict:
    text = FLEET_DOC.read_text()
    m = re.search(r"<!-- aws-shape: iot CreateTopicRule topicRulePayload -->\n```json\n(.*?)\n```", text, re.S)
    assert m, "docs/fleet.md lost its topicRulePayload example"
    return json.loads(m.group(1))


def test_the_rule_is_the_documented_basic_ingest_rule():
    rule = template()["Resources"]["TopicRule"]["Properties"]
    payload = rule["TopicRulePayload"]
    documented = _documented_rule()
    assert payload["Sql"] == documented["sql"]
    assert payload["AwsIotSqlVersion"] == documented["awsIotSqlVersion"]
    assert payload["Actions"][0]["Kinesis"]["PartitionKey"] == documented["actions"][0]["kinesis"]["partitionKey"]
    assert template()["Parameters"]["RuleName"]["Default"] == "ggdefender_fleet"  # the recipe's default rule
    assert re.fullmatch(template()["Parameters"]["RuleName"]["AllowedPattern"], "ggdefender_fleet")


@pytest.mark.parametrize("app, job", [("DetectApplication", "ggdefender.fleet.stream_job"),
                                      ("BaselinesApplication", "ggdefender.fleet.baselines_job")])
def test_flink_run_options_name_what_fleet_package_writes(app, job):
    props = template()["Resources"][app]["Properties"]
    assert props["RuntimeEnvironment"] == "FLINK-1_20"
    run = property_group(app, "kinesis.analytics.flink.run.options")
    assert package.JOBS[run["python"]] == job
    assert run["jarfile"] == package.JARFILE and run["pyFiles"] == package.PY_FILES
    assert props["ApplicationConfiguration"]["ApplicationCodeConfiguration"]["CodeContentType"] == "ZIPFILE"
    assert template()["Parameters"]["FlinkCodeKey"]["Default"].endswith("/" + package.FLINK_ZIP)


def test_the_streaming_job_checkpoints_and_takes_the_parallelism_parameters():
    flink = template()["Resources"]["DetectApplication"]["Properties"]["ApplicationConfiguration"][
        "FlinkApplicationConfiguration"]
    assert flink["CheckpointConfiguration"]["CheckpointingEnabled"] is True
    assert flink["ParallelismConfiguration"]["Parallelism"] == {"Ref": "Parallelism"}
    assert flink["ParallelismConfiguration"]["ParallelismPerKPU"] == {"Ref": "ParallelismPerKPU"}


SAMPLE = {"CodeBucket": "code-bucket", "ProfileKey": "ggdefender/profile.json", "DataBucket": "data-bucket",
          "ReportsStream": "reports", "ViolationsStream": "violations", "AWS::Region": "eu-west-1"}


def resolve(value):
    """A property value as CloudFormation would give it, with SAMPLE's names and the parameters' defaults."""
    names = dict(SAMPLE, **{k: str(v.get("Default")) for k, v in template()["Parameters"].items() if "Default" in v})
    if isinstance(value, dict) and "Ref" in value:
        return names[value["Ref"]]
    if isinstance(value, dict) and "Fn::Sub" in value:
        return re.sub(r"\$\{([^}]+)\}", lambda m: names[m.group(1)], value["Fn::Sub"])
    assert isinstance(value, (str, int)), value
    return str(value)


def _properties_file(tmp_path, app, group):
    resolved = {k: resolve(v) for k, v in property_group(app, group).items()}
    path = tmp_path / "application_properties.json"
    path.write_text(json.dumps([{"PropertyGroupId": group, "PropertyMap": resolved}]))
    return path, resolved


def test_the_streaming_jobs_own_reader_takes_every_property_the_template_sets(tmp_path):
    import boto3
    from moto import mock_aws

    from ggdefender.fleet import stream_job

    path, props = _properties_file(tmp_path, "DetectApplication", stream_job.PROPERTY_GROUP)
    profile = json.loads((ROOT / "docs" / "examples" / "fleet-profile.json").read_text())
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket="code-bucket", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        s3.put_object(Bucket="code-bucket", Key="ggdefender/profile.json", Body=json.dumps(profile).encode())
        cfg = stream_job.config_from_properties(str(path))
    # each property the template sets has its effect (the reader ignores names it does not know)
    effects = {"ProfileS3": cfg.profile == profile, "InputStream": cfg.kinesis_stream == "reports",
               "OutputStream": cfg.kinesis_output == "violations", "Region": cfg.region == "eu-west-1",
               "ModelPath": cfg.model_path == "s3://data-bucket/baselines/",
               "AllowedLatenessSeconds": cfg.lateness_ms == int(props["AllowedLatenessSeconds"]) * 1000,
               "Parallelism": cfg.parallelism == int(props["Parallelism"])}
    assert set(props) == set(effects) and all(effects.values()), effects


def test_the_baselines_jobs_own_reader_takes_every_property_the_template_sets(tmp_path):
    import argparse

    from ggdefender.fleet import baselines_cli, baselines_job, package as pkg

    path, props = _properties_file(tmp_path, "BaselinesApplication", baselines_job.PROPERTY_GROUP)
    argv = baselines_job.properties_argv(str(path))  # refuses a name it does not know
    parser = argparse.ArgumentParser()
    baselines_cli.add_arguments(parser)
    args = parser.parse_args(argv)
    assert args.profile == pkg.PROFILE  # the profile `fleet package --profile` puts at the zip's top
    assert args.input == ["s3://data-bucket/reports/day={day}/"] and args.state == "s3://data-bucket/baselines/"
    assert args.parallelism == int(props["Parallelism"])
    # the day the job reads (its --day, substituted for {day}) is the day partition Firehose writes
    firehose = template()["Resources"]["ReportsDelivery"]["Properties"]["ExtendedS3DestinationConfiguration"]
    partition = firehose["Prefix"].replace("!{timestamp:yyyy-MM-dd}", "2026-12-02")
    assert args.input[0].replace("{day}", "2026-12-02") == "s3://data-bucket/" + partition


@pytest.mark.parametrize("schedule", ["BaselinesSchedule", "BaselinesStopSchedule"])
def test_the_schedules_call_a_real_operation_on_the_baselines_application(schedule):
    target = template()["Resources"][schedule]["Properties"]["Target"]
    m = re.fullmatch(r"arn:\$\{AWS::Partition\}:scheduler:::aws-sdk:([a-z0-9]+):([a-zA-Z]+)", target["Arn"]["Fn::Sub"])
    assert m, target["Arn"]
    service, operation = m.group(1), m.group(2)[0].upper() + m.group(2)[1:]
    assert operation in botocore.session.get_session().get_service_model(service).operation_names
    body = json.loads(target["Input"]["Fn::Sub"].replace("${BaselinesApplication}", "ggdefender-baselines"))
    aws_models.check(body, service, operation)
    assert body["ApplicationName"] == "ggdefender-baselines"  # the application of this stack
    # and the role may call exactly these, on that application
    (policy,) = template()["Resources"]["SchedulerRole"]["Properties"]["Policies"]
    (st,) = policy["PolicyDocument"]["Statement"]
    assert f"kinesisanalytics:{operation}" in st["Action"]
    assert st["Resource"]["Fn::Sub"].endswith(":application/${BaselinesApplication}")
    assert target["RoleArn"] == {"Fn::GetAtt": ["SchedulerRole", "Arn"]}


def test_the_lambda_function_runs_the_act_handler_with_its_settings_variable():
    fn = template()["Resources"]["ActFunction"]["Properties"]
    module, _, name = fn["Handler"].rpartition(".")
    assert module == package.LAMBDA_ENTRY and callable(getattr(act, name))
    assert fn["Runtime"] == "python" + package.LAMBDA_PYTHON[2] + "." + package.LAMBDA_PYTHON[3:]
    assert fn["Architectures"] == ["x86_64"]
    assert list(fn["Environment"]["Variables"]) == [act.SETTINGS_ENV]
    assert template()["Parameters"]["ActCodeKey"]["Default"].endswith("/" + package.LAMBDA_ZIP)
    esm = template()["Resources"]["ActEventSource"]["Properties"]
    assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]  # the handler returns batchItemFailures
    assert esm["BatchSize"] <= act.parse_settings({}).max_violations  # a batch is never cut by the default
    assert esm["EventSourceArn"] == {"Fn::GetAtt": ["ViolationsStream", "Arn"]}



def _documented_deploy() -> list:
    text = FLEET_DOC.read_text()
    m = re.search(r"```sh\n\s*(aws cloudformation deploy .*?)```", text, re.S)
    assert m, "docs/fleet.md lost its `aws cloudformation deploy` command"
    import shlex

    return shlex.split(m.group(1).replace("\\\n", " "))


def test_the_documented_deploy_command_gives_this_templates_parameters():
    words = _documented_deploy()
    assert (ROOT / words[words.index("--template-file") + 1]) == TEMPLATE
    start = words.index("--parameter-overrides") + 1
    given = dict(w.split("=", 1) for w in words[start:] if not w.startswith("--"))
    params = template()["Parameters"]
    assert set(given) <= set(params), set(given) - set(params)
    assert {k for k, v in params.items() if "Default" not in v} <= set(given)  # every required one
    assert "CAPABILITY_IAM" in words  # the stack creates roles
    # the application the docs then start is this stack's streaming application
    stack = words[words.index("--stack-name") + 1]
    assert template()["Resources"]["DetectApplication"]["Properties"]["ApplicationName"] == {
        "Fn::Sub": "${AWS::StackName}-detect"}
    assert f'"ApplicationName": "{stack}-detect"' in FLEET_DOC.read_text()
    act.parse_settings(json.loads(given["ActSettings"]))  # the handler takes the settings shown
