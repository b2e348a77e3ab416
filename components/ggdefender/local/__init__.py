"""ggdefender local part."""
