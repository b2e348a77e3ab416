"""Run the real `gdk component publish` (argv after the output path) in this process with every AWS call
answered in-process, and write what it sent to the JSON file named first.

S3 and STS are moto's (`mock_aws`); GreengrassV2, which moto does not model, is answered by a botocore
`before-send` handler that records each request. Nothing leaves the machine: the test also points HTTP(S)
proxies at a closed loopback port, so gdk's own version check and any call this misses fail fast instead.
"""

import base64
import json
import sys
from datetime import datetime, timezone

import boto3
from botocore.awsrequest import AWSResponse
from moto import mock_aws


class _Body:
    def __init__(self, data: bytes):
        self.data = data

    def stream(self, **_):
        yield self.data


def _reply(request, status: int, body: dict) -> AWSResponse:
    return AWSResponse(request.url, status, {"Content-Type": "application/json"}, _Body(json.dumps(body).encode()))


def main() -> int:
    out_path, argv = sys.argv[1], sys.argv[2:]
    sent = []

    def greengrass(request, event_name, **_):
        operation = event_name.rsplit(".", 1)[-1]
        body = json.loads(request.body or b"{}")
        sent.append({"operation": operation, "method": request.method, "url": request.url, "body": body})
        if operation == "ListComponentVersions":
            return _reply(request, 200, {"componentVersions": []})
        if operation == "CreateComponentVersion":
            import yaml

            recipe = yaml.safe_load(base64.b64decode(body["inlineRecipe"]))
            return _reply(request, 201, {
                "arn": f"arn:aws:greengrass:us-east-1:123456789012:components:{recipe['ComponentName']}:versions:"
                       f"{recipe['ComponentVersion']}",
                "componentName": recipe["ComponentName"], "componentVersion": recipe["ComponentVersion"],
                "creationTimestamp": datetime.now(timezone.utc).timestamp(),
                "status": {"componentState": "REQUESTED", "message": "NONE"}})
        return _reply(request, 400, {"message": f"the test does not answer {operation}"})

    with mock_aws():
        boto3.setup_default_session()
        boto3.DEFAULT_SESSION.events.register("before-send.greengrassv2", greengrass)
        from gdk.CLIParser import main as gdk_main

        sys.argv = ["gdk", *argv]
        try:
            gdk_main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        s3 = boto3.client("s3", region_name="us-east-1")
        objects = {}
        for bucket in s3.list_buckets()["Buckets"]:
            name = bucket["Name"]
            region = s3.get_bucket_location(Bucket=name)["LocationConstraint"] or "us-east-1"
            for obj in s3.list_objects_v2(Bucket=name).get("Contents", []):
                data = s3.get_object(Bucket=name, Key=obj["Key"])["Body"].read()
                objects.setdefault(name, {"region": region, "keys": {}})["keys"][obj["Key"]] = \
                    base64.b64encode(data).decode()
        account = boto3.client("sts", region_name="us-east-1").get_caller_identity()["Account"]
    with open(out_path, "w") as f:
        json.dump({"exit": code, "greengrassv2": sent, "s3": objects, "account": account}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
