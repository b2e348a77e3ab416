"""ggdefender detect part."""
