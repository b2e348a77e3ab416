"""ggdefender remediation part."""
