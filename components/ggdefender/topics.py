"""Every topic the component uses, named once (the table in docs/architecture.md lists them for users).

Local pub/sub topics start with `ggdefender/`; IoT Core topics we own start with `ggdefender/things/{thing}/`;
`$aws/` topics are AWS's. Stdlib only: both processes import this at start-up. The IoT Jobs topics (and the
Jobs API's names and limits) are in jobs_protocol.py, shared by the listener and the offline Jobs service.
"""

# local pub/sub
COLLECTOR_COMMANDS = "ggdefender/collector/commands"  # remediation -> collector: collect-now
COLLECTOR_EVENTS = "ggdefender/collector/events"  # collector -> remediation: report published / failed
CUSTOM_METRICS = "ggdefender/custom-metrics"  # out-of-process plugins -> collector
# remediation -> observers: outcome of Detect's mitigation requests (which travel over the private relay only)
REMEDIATION_RESULTS = "ggdefender/remediation/results"
LOCAL_VIOLATIONS = "ggdefender/violations"
LOCAL_FINDINGS = "ggdefender/findings"
HEALTH = "ggdefender/health"  # process A -> anyone: the health document (docs/configuration.md, "Health")


# IoT Core
REPORT_FORMATS = ("json", "cbor")  # Device Defender's report encodings, each with its own topic
REPORT_OUTCOMES = ("accepted", "rejected")  # Device Defender's reply topics under a report topic


def metrics(thing: str, fmt: str) -> str:
    """Device Defender's report topic; AWS answers on `<topic>/accepted` and `<topic>/rejected`."""
    return f"$aws/things/{thing}/defender/metrics/{fmt}"


# AWS IoT Basic Ingest: `$aws/rules/<rule>/...` goes to that topic rule only (no broker, no messaging charge)
BASIC_INGEST_PREFIX = "$aws/rules/"
# CreateTopicRule's ruleName (the IoT API model: pattern ^[a-zA-Z0-9_]+$, length 1-128)
RULE_NAME_PATTERN = r"^[a-zA-Z0-9_]+$"
RULE_NAME_MAX = 128
DEFAULT_EXPORT_RULE = "ggdefender_fleet"  # the rule the recipe's accessControl grants (docs/fleet.md)


def export(rule: str, thing: str, fmt: str) -> str:
    """Collector.Export's topic for a report: the rules engine strips the `$aws/rules/<rule>/` prefix, so its SQL reads the thing as topic(2) (docs/fleet.md)."""
    return f"{BASIC_INGEST_PREFIX}{rule}/things/{thing}/defender/metrics/{fmt}"


def violations(thing: str) -> str:
    return f"ggdefender/things/{thing}/violations"


def findings(thing: str) -> str:
    return f"ggdefender/things/{thing}/findings"


def health(thing: str) -> str:
    return f"ggdefender/things/{thing}/health"
