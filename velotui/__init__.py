"""velotui: fleet-wide hunting for incident responders, from a terminal."""

__version__ = "0.1.0"
