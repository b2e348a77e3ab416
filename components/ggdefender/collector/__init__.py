"""ggdefender collector part."""
