"""ggdefender plugins part."""
