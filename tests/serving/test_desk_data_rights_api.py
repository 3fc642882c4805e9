"""Data rights over the admin API: find, export (a JSON download) and erase a customer by e-mail; only admins,
the erasure confirmed by typing the address twice, and both audited without the address."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from conversations import crud
from conversations.models import Role, StaffRole
from core.settings import Settings
from serving.app import create_app
from tests.utils.ports import free_port
from tests.utils.staff import make_staff

EMAIL = "ada.customer@example.org"


@pytest.fixture
def http(tmp_path: Path, base_model_dir: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'app.db'}", base_model=base_model_dir,
                        vllm_url=f"http://127.0.0.1:{free_port()}")  # fmt: skip
    with TestClient(create_app(settings)) as client:
        yield client


def test_admins_find_export_and_erase_a_customer(http: TestClient) -> None:
    engine = http.app.state.services.engine
    admin = make_staff(engine, "root@example.com", "Ada Admin", StaffRole.admin)
    staff = make_staff(engine, "sam@example.com", "Sam Staff")
    with Session(engine) as session:
        conversation, _ = crud.create_conversation(session=session)
        cid = conversation.id
        crud.add_message(session=session, conversation_id=cid, role=Role.customer, text=f"Please answer me at {EMAIL}")

    assert http.get("/api/staff/customers", params={"email": EMAIL}, cookies=staff.cookies).status_code == 403
    found = http.get("/api/staff/customers", params={"email": EMAIL.upper()}, cookies=admin.cookies)
    assert found.status_code == 200 and [c["id"] for c in found.json()] == [cid]
    assert http.get("/api/staff/customers", params={"email": "nobody"}, cookies=admin.cookies).status_code == 422

    exported = http.get("/api/staff/customers/export", params={"email": EMAIL}, cookies=admin.cookies)
    assert exported.headers["content-disposition"].startswith("attachment")
    assert exported.json()["conversations"][0]["messages"][0]["text"] == f"Please answer me at {EMAIL}"

    typo = http.post("/api/staff/customers/erase", json={"email": EMAIL, "confirm_email": "ada.customer@example.com"},
                     cookies=admin.cookies, headers=admin.headers)  # fmt: skip
    assert typo.status_code == 422 and http.get(f"/api/staff/conversations/{cid}", cookies=admin.cookies).is_success
    erased = http.post("/api/staff/customers/erase", json={"email": EMAIL, "confirm_email": EMAIL},
                       cookies=admin.cookies, headers=admin.headers)  # fmt: skip
    assert erased.status_code == 200 and erased.json()["conversations"] == 1 and erased.json()["messages"] == 1
    assert http.get(f"/api/staff/conversations/{cid}", cookies=admin.cookies).status_code == 404
    audit = http.get("/api/staff/audit", cookies=admin.cookies).json()
    assert [entry["action"] for entry in audit[:2]] == ["data.erase", "data.export"]
    assert EMAIL not in str(audit)
