"""Domain errors of the service: what went wrong, in words, without any HTTP knowledge.

Every error carries a short snake_case `code` (used as the `reason` label of
`recap_request_failures_total`); `service.api.errors` maps each class to a status code in one table.
Messages say what was expected and what came, and never echo the payload back.
"""

from __future__ import annotations


class RecapError(Exception):
    """Base of every error a client can cause; `code` is the metric reason."""

    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInputError(RecapError):
    """The request is malformed or does not fit the model (400)."""

    code = "invalid_input"


class ClientDisconnectedError(InvalidInputError):
    """The client went away before it sent the whole request (counted apart from bad input)."""

    code = "client_disconnected"


class UnsupportedError(InvalidInputError):
    """The request asks for a feature this server does not implement (400)."""

    code = "unsupported"


class UnauthenticatedError(RecapError):
    """No API key, or one the server does not hold (401)."""

    code = "unauthenticated"


class ForbiddenError(RecapError):
    """A valid API key without the scope the route needs (403)."""

    code = "forbidden"


class ModelNotFoundError(RecapError):
    """No such model, or no such version of it (404)."""

    code = "model_not_found"


class ModelNotReadyError(RecapError):
    """The model exists but failed to load (503); the message carries the reason."""

    code = "model_not_ready"


class PayloadTooLargeError(RecapError):
    """The request body is over the configured limit (413)."""

    code = "payload_too_large"


class OverloadedError(RecapError):
    """A capacity limit (such as concurrent generation streams) is reached; retry later (429)."""

    code = "overloaded"


class InternalError(RecapError):
    """Anything unexpected: logged with its traceback, answered with an opaque 500."""

    code = "internal"


class ModelLoadError(Exception):
    """A model version could not be loaded; the repository turns it into a not-ready reason."""
