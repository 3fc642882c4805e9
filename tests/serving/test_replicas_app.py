"""The app in front of several vLLM replicas: customers are answered only through replicas that hold the
promoted adapter, promotion reaches every replica, a restarted replica gets the adapter back, and /metrics
counts the turns and records which replica serves what.

The replicas are stand-ins speaking vLLM's endpoints (tests/utils/fake_vllm.py); everything else is real.
"""

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from core.settings import Settings
from runtime.registry import ADAPTER_META, AdapterRegistry
from serving.app import create_app
from tests.utils.conversation import bot_reply, open_conversation, send
from tests.utils.fake_vllm import FakeVLLM


def add_adapter(adapters_dir: Path, name: str) -> None:
    (adapters_dir / name).mkdir(parents=True)
    (adapters_dir / name / ADAPTER_META).write_text(json.dumps({"name": name}))


def metric(client: TestClient, name: str, **labels: str) -> float:
    """One sample's value from /metrics (0 when absent)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items()):
                return sample.value
    return 0.0


@pytest.fixture
def fakes() -> Iterator[list[FakeVLLM]]:
    replicas = [FakeVLLM(f"replica-{index}").start() for index in range(2)]
    yield replicas
    for replica in replicas:
        replica.stop()


@pytest.fixture
def app(fakes: list[FakeVLLM], tmp_path: Path, base_model_dir: Path) -> Iterator[TestClient]:
    add_adapter(tmp_path / "adapters", "domain-v1")
    AdapterRegistry(tmp_path / "adapters").promote("domain-v1")
    settings = Settings(
        data_dir=tmp_path,
        base_model=base_model_dir,
        database_url=f"sqlite:///{tmp_path / 'app.db'}",
        vllm_urls=[fake.url for fake in fakes],
        vllm_refresh_s=0.05,
        # The tests run the promotion check themselves: the background one would load the adapter into the second
        # replica at a moment of its own choosing.
        promotion_check_s=3600,
    )
    fakes[0].adapters["domain-v1"] = str(tmp_path / "adapters" / "domain-v1")
    with TestClient(create_app(settings)) as client:
        # The check at start-up loads the adapter into the second replica too; that replica then restarts and
        # forgets it, so only the first one serves it until the next check (the tests run it themselves).
        deadline = time.monotonic() + 30
        while ("load", "domain-v1") not in fakes[1].requests:
            assert time.monotonic() < deadline, "the check at start-up did not load the adapter into every replica"
            time.sleep(0.05)
        fakes[1].adapters.clear()
        client.portal.call(client.app.state.services.llm.replicas.refresh)  # type: ignore[attr-defined]
        yield client


# Policy questions the help content answers, so every turn goes to the model (an order question would start the
# order lookup instead).
QUESTIONS = ("How long do I have to return a lamp?", "How much does express shipping cost?", "Do you take Apple Pay?")


def converse(client: TestClient, turns: int) -> list[dict]:
    conversation_id, headers = open_conversation(client)
    questions = [QUESTIONS[turn % len(QUESTIONS)] for turn in range(turns)]
    return [bot_reply(send(client, conversation_id, headers, question)) for question in questions]


def test_turns_go_to_replicas_with_the_adapter_and_promotion_reaches_all(app: TestClient, fakes, tmp_path) -> None:
    services = app.app.state.services  # type: ignore[attr-defined]
    first, second = fakes
    answered_before = metric(app, "supportbot_turns_total", decision="answer", intent="none")

    # The stand-ins' words are checked against the help articles and replaced, so which replica answered is
    # read from the replicas themselves, not from the reply text.
    replies = converse(app, 3)
    assert first.chats("domain-v1") == 3
    assert all(reply["model"] == "domain-v1" and not reply["failed"] for reply in replies)
    assert second.chats("domain-v1") == 0, "the replica lacking the adapter must not be asked for it"
    assert metric(app, "supportbot_turns_total", decision="answer", intent="none") == answered_before + 3
    assert metric(app, "supportbot_vllm_replica_serves", replica=second.url, model="domain-v1") == 0

    # The promotion watcher finds the replica without the promoted adapter and loads it there.
    app.portal.call(services.promotions.check)
    assert "domain-v1" in second.adapters
    converse(app, 2)
    assert second.chats("domain-v1") >= 1, "once loaded, the second replica takes its share"
    assert metric(app, "supportbot_vllm_replica_serves", replica=second.url, model="domain-v1") == 1

    # A new version is loaded into every replica before the bot switches to it.
    add_adapter(tmp_path / "adapters", "domain-v2")
    AdapterRegistry(tmp_path / "adapters").promote("domain-v2")
    assert app.portal.call(services.promotions.check)
    assert "domain-v2" in first.adapters and "domain-v2" in second.adapters
    assert services.dialogue.models.current() == "domain-v2"
    assert {reply["model"] for reply in converse(app, 2)} == {"domain-v2"}

    # One replica crashes: customers are still answered, by the other, and readiness holds.
    second.stop()
    asked = first.chats()
    assert not any(reply["failed"] for reply in converse(app, 3))
    assert first.chats() == asked + 3
    assert app.get("/readyz").json()["checks"]["model_server"] is True
    assert metric(app, "supportbot_vllm_replica_up", replica=second.url) == 0
    for stage in ("classify", "route", "prompt", "llm_first_token", "llm_total", "total"):
        assert metric(app, "supportbot_stage_seconds_count", stage=stage) > 0, stage
    assert metric(app, "supportbot_llm_tokens_total", direction="completion") >= 3 * 10


def test_no_replica_with_the_adapter_means_the_apology_and_a_fallback_count(app: TestClient, fakes) -> None:
    fallbacks = metric(app, "supportbot_fallbacks_total", reason="model_unavailable")
    fakes[0].stop()
    reply = converse(app, 1)[0]
    assert reply["failed"] is True, reply
    assert metric(app, "supportbot_fallbacks_total", reason="model_unavailable") == fallbacks + 1


def test_feedback_and_csat_are_counted(app: TestClient) -> None:
    conversation_id, headers = open_conversation(app)
    reply = bot_reply(send(app, conversation_id, headers, "How long do I have to return a lamp?"))
    down = metric(app, "supportbot_feedback_total", rating="down")
    csat = metric(app, "supportbot_csat_score_count")
    path = f"/api/conversations/{conversation_id}"
    assert app.post(f"{path}/messages/{reply['id']}/feedback", json={"rating": "down"}, headers=headers).is_success
    assert app.post(f"{path}/csat", json={"score": 2}, headers=headers).is_success
    assert metric(app, "supportbot_feedback_total", rating="down") == down + 1
    assert metric(app, "supportbot_csat_score_count") == csat + 1
