"""The relay's policy for process B (relay_server.Policy) is the part of the recipe's accessControl that B needs:
never more than the recipe grants (the nucleus would refuse it anyway, and the relay must not promise it),
and every other grant is one process A uses for itself (remediation jobs, health), listed here
with why, so a topic added to either side without the other fails this test."""

import os

import yaml

from ggdefender import topics
from ggdefender.collector.export import ExportSettings
from ggdefender.supervisor.relay_server import Policy
from ggdefender.jobs_protocol import jobs_prefix, subscription_filters

RECIPE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                      "recipes", "ggdefender.Defender.yaml")
THING = "policyThing"
JOBS = jobs_prefix(THING)
# the remediation listener's IoT Jobs topics (one grant holds both operations): what it subscribes to, and
# the requests it publishes
JOBS_GRANT = set(subscription_filters(THING)) | {JOBS + "start-next", JOBS + "+/get", JOBS + "+/update"}

# what the recipe grants for process A only (B never gets it through the relay)
A_ONLY = {
    "aws.greengrass#PublishToIoTCore": {
        topics.health(THING),  # the supervisor's health document
        *JOBS_GRANT,
    },
    "aws.greengrass#SubscribeToIoTCore": JOBS_GRANT,
    "aws.greengrass#PublishToTopic": {
        topics.HEALTH,  # the supervisor's health document
        topics.REMEDIATION_RESULTS,  # outcomes of Detect's mitigation requests, for observers
    },
    # none: remediation's collect-now asks the collector over the private relay, not the bus
    "aws.greengrass#SubscribeToTopic": set(),
}


def _recipe_grants() -> dict:
    with open(RECIPE, encoding="utf-8") as fh:
        recipe = yaml.safe_load(fh)
    access = recipe["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]
    grants: dict = {op: set() for op in A_ONLY}
    for service in ("aws.greengrass.ipc.mqttproxy", "aws.greengrass.ipc.pubsub"):
        for policy in access[service].values():
            for op in policy["operations"]:
                grants[op].update(r.replace("{iot:thingName}", THING) for r in policy["resources"])
    return grants


def _relay_grants() -> dict:
    policy = Policy(THING)
    # Collector.Export's topics with the default rule, the one the recipe grants (allowed only when A's own
    # configuration turns exporting on: tests/unit/collector/test_export.py)
    exported = set(ExportSettings(mode="also").topics(THING))
    return {"aws.greengrass#PublishToIoTCore": set(policy.iot_publish) | exported,
            "aws.greengrass#SubscribeToIoTCore": set(policy.iot_subscribe),
            "aws.greengrass#PublishToTopic": set(Policy.LOCAL_PUBLISH),
            "aws.greengrass#SubscribeToTopic": set(Policy.LOCAL_SUBSCRIBE)}


def test_relay_never_allows_what_the_recipe_does_not_grant():
    grants, relay = _recipe_grants(), _relay_grants()
    for op, allowed in relay.items():
        assert allowed <= grants[op], f"{op}: the relay lets B use {sorted(allowed - grants[op])}, the recipe does not"


def test_relay_is_the_recipe_minus_what_only_process_a_uses():
    grants, relay = _recipe_grants(), _relay_grants()
    for op in grants:
        assert relay[op] == grants[op] - A_ONLY[op], op
        assert not relay[op] & A_ONLY[op], f"{op}: B may use A's {sorted(relay[op] & A_ONLY[op])}"
