"""Reusable console widgets: one widget per module, each with its own ``DEFAULT_CSS``."""
