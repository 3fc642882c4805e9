"""Production logs are one JSON object per line, with the conversation id of the request they belong to."""

import io
import json
import logging
from collections.abc import Iterator

import pytest

from core.settings import Settings
from serving.logging import JsonFormatter, configure_logging, conversation_id_var, set_conversation_id


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("supportbot.test")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    token = conversation_id_var.set(None)
    yield logger, stream
    conversation_id_var.reset(token)
    logger.removeHandler(handler)
    logger.propagate = True


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_is_one_json_object_with_the_conversation_id(logged) -> None:
    logger, stream = logged
    logger.warning("model %s failed", "domain-v3")
    set_conversation_id("c-123")
    logger.info("reply stored", extra={"latency_ms": 812.5})
    logger.info("from a worker", extra={"conversation_id": "c-456"})
    first, second, third = lines(stream)
    assert first["message"] == "model domain-v3 failed" and first["level"] == "WARNING"
    assert first["logger"] == "supportbot.test" and "conversation_id" not in first
    assert first["time"].endswith("+00:00")
    assert second["conversation_id"] == "c-123" and second["latency_ms"] == 812.5
    assert third["conversation_id"] == "c-456", "an explicit extra= wins over the request's id"


def test_exceptions_and_odd_text_stay_on_one_line(logged) -> None:
    logger, stream = logged
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        logger.exception("swap failed for «intent-v2»")
    (line,) = lines(stream)
    assert line["message"] == "swap failed for «intent-v2»"
    assert "ValueError: bad\nthing" in line["exception"]
    assert stream.getvalue().count("\n") == 1


def test_json_is_the_production_default_and_configure_keeps_other_handlers() -> None:
    assert Settings(mode="production", secret_key="s3cret-from-vault").resolved_log_format == "json"
    assert Settings().resolved_log_format == "text"
    assert Settings(log_format="json").resolved_log_format == "json"
    root = logging.getLogger()
    before = [handler for handler in root.handlers if handler.get_name() != "supportbot"]
    level = root.level
    try:
        configure_logging("json")
        configure_logging("json")
        ours = [handler for handler in root.handlers if handler not in before]
        assert len(ours) == 1 and isinstance(ours[0].formatter, JsonFormatter)
        assert all(handler in root.handlers for handler in before)
    finally:
        for handler in root.handlers[:]:
            if handler not in before:
                root.removeHandler(handler)
        root.setLevel(level)
