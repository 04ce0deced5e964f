"""Domain errors of the service: what went wrong, in words, without any HTTP knowledge.

Every error carries a short snake_case `code` (used as the `reason` label of
`recap_request_failures_total`); `service.api.errors` maps each class to a status code in one table.
Messages say what was expected and what came, and never echo the payload back.
"""

from __future__ import annotations


class RecapError(Exception):
    """Base of every error a client can cause; `code` is the metric reason."""

    code = "internal"
    # Raised before the request body was read: the connection is closed rather than drained.
    closes_connection = False

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
    closes_connection = True


class ForbiddenError(RecapError):
    """A valid API key without the scope the route needs (403)."""

    code = "forbidden"
    closes_connection = True


class ModelNotFoundError(RecapError):
    """No such model, or no such version of it (404)."""

    code = "model_not_found"


class ModelNotReadyError(RecapError):
    """The model exists but failed to load (503); the message carries the reason."""

    code = "model_not_ready"


class PayloadTooLargeError(RecapError):
    """The request body is over the configured limit (413)."""

    code = "payload_too_large"
    closes_connection = True


class RetryLaterError(RecapError):
    """A capacity limit is reached; the same request may succeed in `retry_after_s` seconds. The
    connection stays open (an unread body is drained, not kept), so the client reads the 503."""

    code = "overloaded"
    retry_after_s = 1


class ServerBusyError(RetryLaterError):
    """--max-concurrency requests are in progress (503)."""

    code = "server_busy"


class ModelBusyError(RetryLaterError):
    """The model's own concurrency cap is reached (503)."""

    code = "model_busy"


class InflightBytesError(RetryLaterError):
    """Taking this body would pass --max-inflight-bytes (503)."""

    code = "inflight_bytes"


class OverloadedError(RetryLaterError):
    """The cap on concurrent generation streams is reached (429)."""

    code = "stream_limit"


class ShuttingDownError(RetryLaterError):
    """The server is draining and the drain's timeout is over: work still running is stopped (503;
    another replica can take the retry)."""

    code = "shutdown"


class DeadlineExceededError(RecapError):
    """The request was not answered within its deadline (504)."""

    code = "deadline_exceeded"


class RequestTimeoutError(RecapError):
    """The client did not send its whole body in time (408)."""

    code = "body_timeout"
    closes_connection = True


class InternalError(RecapError):
    """Anything unexpected: logged with its traceback, answered with an opaque 500."""

    code = "internal"


class ModelLoadError(Exception):
    """A model version could not be loaded; the repository turns it into a not-ready reason."""
