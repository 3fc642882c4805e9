"""What the app shows strangers: production hides the API description and serves metrics only with a token, and
its front page is the console (locally, the demo shop); every answer tells browsers not to sniff its type."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from tests.conftest import stand_in_settings_at
from tests.utils.conversation import open_conversation
from tests.utils.fake_vllm import FakeVLLM

METRICS_TOKEN = "scrape-me-3f9a1c"


@pytest.fixture(scope="module")
def production(stand_in_vllm: FakeVLLM, base_model_dir: Path, tmp_path_factory) -> Iterator[TestClient]:
    settings = stand_in_settings_at(
        tmp_path_factory.mktemp("production"), stand_in_vllm, base_model_dir,
        mode="production", secret_key="a-real-secret-for-tests", metrics_token=METRICS_TOKEN,
    )  # fmt: skip
    with TestClient(create_app(settings), base_url="https://testserver") as client:
        yield client


@pytest.fixture(scope="module")
def local(stand_in_vllm: FakeVLLM, base_model_dir: Path, tmp_path_factory) -> Iterator[TestClient]:
    with TestClient(create_app(stand_in_settings_at(tmp_path_factory.mktemp("local"), stand_in_vllm,
                                                    base_model_dir))) as client:  # fmt: skip
        yield client


@pytest.mark.parametrize(
    "path", ["/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect", "/docs/static/swagger-ui-bundle.js"]
)
def test_production_hides_the_api_description(production: TestClient, local: TestClient, path: str) -> None:
    assert production.get(path).status_code == 404
    assert local.get(path).status_code == 200


def test_the_front_page_leads_to_the_demo_shop_locally_and_the_console_in_production(
    production: TestClient, local: TestClient
) -> None:
    assert production.get("/", follow_redirects=False).headers["location"] == "/console"
    assert local.get("/", follow_redirects=False).headers["location"] == "/demo"
    shop = local.get("/")
    assert shop.status_code == 200 and "(demo shop)" in shop.text and 'src="/widget.js"' in shop.text


def test_metrics_need_the_token_in_production(production: TestClient) -> None:
    assert production.get("/metrics").status_code == 401
    assert production.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert production.get("/metrics", headers={"Authorization": METRICS_TOKEN}).status_code == 401
    scraped = production.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert scraped.status_code == 200 and "supportbot_" in scraped.text


def test_without_a_token_production_does_not_serve_metrics(stand_in_vllm, base_model_dir, tmp_path) -> None:
    settings = stand_in_settings_at(tmp_path, stand_in_vllm, base_model_dir, mode="production",
                                    secret_key="a-real-secret-for-tests")  # fmt: skip
    with TestClient(create_app(settings)) as client:
        assert client.get("/metrics").status_code == 404


def test_local_metrics_stay_open_for_development(local: TestClient) -> None:
    assert local.get("/metrics").status_code == 200


def test_every_answer_says_nosniff(local: TestClient) -> None:
    conversation_id, headers = open_conversation(local)
    answers = [
        local.get(f"/api/conversations/{conversation_id}", headers=headers),
        local.get("/api/conversations/nope", headers=headers),
        local.post("/api/conversations", content=b"{", headers={"content-type": "application/json"}),
        local.get("/healthz"),
        local.get("/console/login"),
        local.get("/widget.js"),  # sets the header itself: it must not come twice
    ]
    with local.stream("GET", f"/api/conversations/{conversation_id}/events", headers=headers) as stream:
        answers.append(stream)
    assert [answer.headers.get("x-content-type-options") for answer in answers] == ["nosniff"] * len(answers)
