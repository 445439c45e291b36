"""The one error type operators see: a refusal whose message is one line."""


class ServiceError(Exception):
    """A request the server refuses; the message is one line for the operator."""
