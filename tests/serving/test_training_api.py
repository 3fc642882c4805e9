"""Starting retraining from the admin API: the run is queued for a worker (202) with its plan, listed, audited,
refused while one is active (409), cancelled, and startable again; staff who are not admins cannot start one."""

from fastapi.testclient import TestClient
from sqlmodel import Session

from cli.training import plan_preview
from conversations import crud
from conversations.models import StaffRole
from core.settings import Settings
from serving.app import create_app
from tests.utils.api import assert_error
from tests.utils.staff import make_staff


def test_an_admin_starts_cancels_and_restarts_a_run(stand_in_settings: Settings) -> None:
    settings = stand_in_settings.model_copy(update={"training_runner": "queue"})
    # The planner `supportbot start` hands in: the trainer's own planning, which serving does not import.
    with TestClient(create_app(settings, planner=plan_preview)) as client:
        engine = client.app.state.services.engine  # type: ignore[attr-defined]
        admin = make_staff(engine, "ada@example.com", "Ada Admin", StaffRole.admin)
        staff = make_staff(engine, "sam@example.com", "Sam Staff")

        client.cookies.update(staff.cookies)
        assert_error(client.post("/api/admin/runs", headers=staff.headers), 403, "admins_only")
        client.cookies.clear()
        client.cookies.update(admin.cookies)

        started = client.post("/api/admin/runs", headers=admin.headers)
        assert started.status_code == 202, started.text
        run = started.json()
        assert run["status"] == "queued" and run["trigger"] == "manual" and not run["promoted"]
        # The plan comes back before any worker has claimed the run: with no adapter in service every seed
        # conversation of the train split is new, and the time bound is worked out from their tokens.
        plan = run["progress"]["plan"]
        assert set(plan["new_by_source"]) == {"seed"} and plan["new_conversations"] > 100
        assert plan["tokens"] > 100 * plan["new_conversations"] and 0 < plan["estimated_s"] < plan["time_bound_s"]
        assert client.get(f"/api/admin/runs/{run['id']}").json()["status"] == "queued"
        assert [listed["id"] for listed in client.get("/api/admin/runs").json()] == [run["id"]]
        with Session(engine) as session:
            audit = crud.list_audit(session=session, action="retrain.start", offset=0, limit=10)
            assert [(entry.actor_id, entry.target) for entry in audit] == [(admin.id, f"run:{run['id']}")]

        assert_error(client.post("/api/admin/runs", headers=admin.headers), 409, "run_active")
        cancelled = client.post(f"/api/admin/runs/{run['id']}/cancel", headers=admin.headers)
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        again = client.post("/api/admin/runs", headers=admin.headers)
        assert again.status_code == 202 and again.json()["id"] != run["id"]
