"""ggdefender: an AWS IoT Device Defender agent for Greengrass v2 (collector, plugins, remediation, detect)."""

__version__ = "1.0.0"
