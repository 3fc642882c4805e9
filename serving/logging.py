"""Log set-up for every supportbot process: readable text locally, one JSON object per line in production.

A JSON line carries the conversation id of the request it was written for, so one chat's lines can be found.
"""

import json
import logging
import traceback
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

# Set by the customer routes for the request being served; copied into every log line written meanwhile.
conversation_id_var: ContextVar[str | None] = ContextVar("conversation_id", default=None)

NOISY_LOGGERS = ("httpx", "httpcore", "openai", "transformers")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_HANDLER_NAME = "supportbot"
# Attributes every LogRecord has; anything else on a record came from `extra=` and goes into the JSON line.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def set_conversation_id(conversation_id: str | None) -> None:
    conversation_id_var.set(conversation_id)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, conversation_id, and any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        conversation_id = getattr(record, "conversation_id", None) or conversation_id_var.get()
        if conversation_id:
            entry["conversation_id"] = conversation_id
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(log_format: str, *, verbose: bool = False) -> None:
    """Send every logger's records to standard error in `log_format` ("text" or "json")."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    # Replace only a handler set up here before: others (a test runner's capture) stay.
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def uvicorn_log_config(log_format: str) -> dict | None:
    """uvicorn's own logging set-up for text; none for JSON, so its lines reach the root handler above."""
    if log_format == "json":
        return None
    from uvicorn.config import LOGGING_CONFIG

    return LOGGING_CONFIG
