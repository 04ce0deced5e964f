"""Logging: every line about a request carries its request id, as text or as one JSON object per line.

The id lives in a context variable that the HTTP front door sets per request (`service.api.front`).
Each request runs in its own task, and worker threads started with anyio copy the context, so a log
line written anywhere while a request is handled (uvicorn's access log included) names its request.
Lines that belong to no request carry "-".
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

import orjson

from service.settings import LogFormat

NO_REQUEST = "-"
REQUEST_ID: ContextVar[str] = ContextVar("recap_request_id", default=NO_REQUEST)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


class RequestIdFilter(logging.Filter):
    """Stamps each record with the request id of the context that logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line for log shippers: time, level, logger, request_id, message, exc_info."""

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", NO_REQUEST),
            "message": record.getMessage(),
        }
        if record.exc_info:
            document["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(document).decode()


def configure(level: str, log_format: LogFormat) -> None:
    """The root logger writes to stderr in `log_format`; uvicorn's loggers propagate to it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
