"""The app starts with production settings against PostgreSQL, as the compose file and the manifests run it:
migrations run, liveness is up, readiness says the model server is missing, metrics and JSON logs work, and a
customer still gets the apology (stored and flagged) while no vLLM answers.
"""

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient

from conversations.db import alembic_config, current_revision
from core.settings import Settings
from serving.app import create_app
from serving.logging import JsonFormatter
from tests.utils.conversation import bot_reply, open_conversation, send
from tests.utils.ports import free_port


@pytest.fixture
def production_env(monkeypatch: pytest.MonkeyPatch, postgres_url: str, tmp_path: Path, base_model_dir: Path) -> None:
    """The environment a production container gets: every setting from SUPPORTBOT_* variables."""
    for name, value in {
        "SUPPORTBOT_MODE": "production",
        "SUPPORTBOT_SECRET_KEY": "a-real-secret-from-the-vault-0123456789",
        "SUPPORTBOT_DATABASE_URL": postgres_url,
        "SUPPORTBOT_VLLM_URL": f"http://127.0.0.1:{free_port()}",
        "SUPPORTBOT_DATA_DIR": str(tmp_path / "data"),
        "SUPPORTBOT_BASE_MODEL": str(base_model_dir),
        "SUPPORTBOT_TRAINING_RUNNER": "queue",
        "SUPPORTBOT_WIDGET_ALLOWED_ORIGINS": '["https://shop.example.com"]',
        "SUPPORTBOT_METRICS_TOKEN": "scraper-token",
    }.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Everything logged meanwhile, formatted as the production JSON lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def test_app_starts_in_production_mode_on_postgresql(production_env: None, json_log: io.StringIO) -> None:
    settings = Settings()
    assert settings.mode == "production" and not settings.manages_vllm
    assert settings.resolved_log_format == "json"
    with TestClient(create_app(settings)) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert services.engine.dialect.name == "postgresql"
        assert current_revision(services.engine) == head, "migrations ran at start"

        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"] == {"database": True, "model_server": False}

        # Without a model server the customer's message is kept and answered with the apology.
        conversation_id, headers = open_conversation(client)
        reply = bot_reply(send(client, conversation_id, headers, "Where is my order 12345?"))
        assert reply["failed"] is True
        transcript = client.get(f"/api/conversations/{conversation_id}", headers=headers).json()
        assert transcript["conversation"]["needs_attention"] is True

        assert client.get("/metrics").status_code == 401
        assert client.get("/docs").status_code == 404 and client.get("/openapi.json").status_code == 404
        metrics = client.get("/metrics", headers={"Authorization": "Bearer scraper-token"})
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
        assert 'supportbot_fallbacks_total{reason="model_unavailable"}' in metrics.text
        assert "supportbot_vllm_replica_up" in metrics.text

    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    no_reply = [line for line in lines if "no reply" in line["message"]]
    assert no_reply and no_reply[0]["conversation_id"] == conversation_id and no_reply[0]["level"] == "WARNING"


def test_metrics_can_be_turned_off(production_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORTBOT_METRICS_ENABLED", "false")
    with TestClient(create_app(Settings())) as client:
        assert client.get("/metrics").status_code == 404


def test_replicas_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "SUPPORTBOT_VLLM_URLS", '["dns+http://vllm.supportbot.svc.cluster.local:8000", "http://b:8000/"]'
    )
    settings = Settings()
    assert settings.vllm_replica_urls == ["dns+http://vllm.supportbot.svc.cluster.local:8000", "http://b:8000"]
    assert not settings.manages_vllm
    # The worker process gets the same list through the environment.
    assert json.loads(settings.as_env()["SUPPORTBOT_VLLM_URLS"]) == settings.vllm_urls
