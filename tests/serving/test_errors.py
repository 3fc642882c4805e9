"""Typed errors of the store, the adapter store and vLLM reach clients in the one error shape, each with its code."""

from fastapi import FastAPI
from fastapi.testclient import TestClient

from bot.vllm_admin import AdapterLoadFailed
from conversations import crud
from runtime.registry import AdapterNotFound
from serving.errors import ERROR_STATUS, install_error_handlers


def every_subclass(kind: type) -> list[type]:
    return [sub for direct in kind.__subclasses__() for sub in (direct, *every_subclass(direct))]


def test_every_store_error_has_a_status_and_its_own_code() -> None:
    kinds = every_subclass(crud.StoreError)
    assert kinds and all(kind in ERROR_STATUS for kind in kinds), "a store error without a status would be a 500"
    codes = [kind.code for kind in kinds]
    assert len(set(codes)) == len(codes) and "store_error" not in codes


def test_typed_errors_become_their_status_code_and_message() -> None:
    app = FastAPI()
    install_error_handlers(app)
    raised = {
        "run": crud.RunNotFound(7),
        "active": crud.RunAlreadyActive("run 3 is running"),
        "conflict": crud.ReviewConflict("the review of message 4", 1, 2),
        "adapter": AdapterNotFound("domain-v9"),
        "refused": AdapterLoadFailed("vLLM could not load domain-v2: no vLLM replica reachable"),
    }

    @app.get("/{what}")
    def fail(what: str) -> None:
        raise raised[what]

    client = TestClient(app)
    answers = {what: client.get(f"/{what}") for what in raised}
    assert {what: (answer.status_code, answer.json()["error"]["code"]) for what, answer in answers.items()} == {
        "run": (404, "run_not_found"),
        "active": (409, "run_active"),
        "conflict": (409, "review_conflict"),
        "adapter": (404, "adapter_not_found"),
        "refused": (503, "model_server_refused"),
    }
    assert answers["run"].json()["error"]["message"] == "No retraining run 7."
    assert answers["active"].json()["error"]["message"] == "A retraining run is already going (run 3 is running)."
    assert "now at version 2" in answers["conflict"].json()["error"]["message"]
