"""The desk's assignment over the staff API: the unassigned queue, round-robin among on-duty teammates,
reassignment when nobody answers in time, first-response timers, canned replies with placeholders, and internal
notes that no customer-facing route ever returns."""

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from conversations import crud
from conversations.models import StaffRole
from serving.app import create_app
from tests.conftest import stand_in_settings_at
from tests.utils.conversation import open_conversation, send
from tests.utils.desk import wait_for
from tests.utils.fake_vllm import FakeVLLM
from tests.utils.staff import Staff, make_staff

# A language the demo pack does not serve: the bot hands the customer to a teammate on the first message.
HANDOFF = "Bonjour, je voudrais parler à quelqu'un de ma commande, s'il vous plaît."


@pytest.fixture
def desk_app(stand_in_vllm: FakeVLLM, base_model_dir: Path, tmp_path: Path, request) -> Iterator[TestClient]:
    overrides = getattr(request, "param", {})
    settings = stand_in_settings_at(tmp_path, stand_in_vllm, base_model_dir, alert_poll_s=0.2, **overrides)
    with TestClient(create_app(settings)) as http:
        yield http


def handed_off(http: TestClient) -> tuple[str, dict[str, str]]:
    cid, customer = open_conversation(http)
    [reply] = [data for name, data in send(http, cid, customer, HANDOFF) if name == "bot_message"]
    assert reply["decision"] == "handoff"
    return cid, customer


def inbox(http: TestClient, staff: Staff, **filters: str) -> dict[str, dict]:
    response = http.get("/api/staff/conversations", params=filters, cookies=staff.cookies)
    assert response.status_code == 200, response.text
    return {row["id"]: row for row in response.json()["conversations"]}


def assignee(http: TestClient, staff: Staff, cid: str) -> int | None:
    return http.get(f"/api/staff/conversations/{cid}/assignment", cookies=staff.cookies).json()["assignee_id"]


def test_a_handoff_waits_in_the_unassigned_queue_until_someone_is_assigned(desk_app: TestClient) -> None:
    engine = desk_app.app.state.services.engine
    ada = make_staff(engine, "ada@example.com", "Ada Admin", StaffRole.admin)
    bea = make_staff(engine, "bea@example.com", "Bea Staff")
    cid, _ = handed_off(desk_app)
    assert cid in inbox(desk_app, ada, queue="unassigned")
    assert cid not in inbox(desk_app, bea, queue="mine")

    saved = desk_app.put(f"/api/staff/conversations/{cid}/assignment", json={"assignee_id": bea.id, "team": "Returns"},
                         cookies=ada.cookies, headers=ada.headers)  # fmt: skip
    assert saved.status_code == 200 and saved.json()["team"] == "returns"
    assert cid not in inbox(desk_app, ada, queue="unassigned")
    row = inbox(desk_app, bea, queue="mine")[cid]
    assert row["assignee"] == "Bea Staff" and row["team"] == "returns"
    assert cid in inbox(desk_app, ada, team="returns") and cid not in inbox(desk_app, ada, team="billing")
    audit = desk_app.get("/api/staff/audit", params={"action": "desk.assign"}, cookies=ada.cookies).json()
    assert audit[0]["details"]["to_staff"] == bea.id

    unknown = desk_app.put(f"/api/staff/conversations/{cid}/assignment", json={"assignee_id": 9999},
                           cookies=ada.cookies, headers=ada.headers)  # fmt: skip
    assert unknown.status_code == 404 and assignee(desk_app, ada, cid) == bea.id  # nothing changed
    bad_queue = desk_app.get("/api/staff/conversations", params={"queue": "everyone"}, cookies=ada.cookies)
    assert bad_queue.status_code == 422


@pytest.mark.parametrize("desk_app", [{"desk_round_robin": True}], indirect=True)
def test_round_robin_takes_on_duty_teammates_in_turn(desk_app: TestClient) -> None:
    engine = desk_app.app.state.services.engine
    ada = make_staff(engine, "ada@example.com", "Ada Admin", StaffRole.admin)
    bea = make_staff(engine, "bea@example.com", "Bea Staff")
    cy = make_staff(engine, "cy@example.com", "Cy Away")
    desk_app.put(f"/api/staff/accounts/{cy.id}/duty", json={"on_duty": False}, cookies=cy.cookies, headers=cy.headers)
    turns = [assignee(desk_app, ada, handed_off(desk_app)[0]) for _ in range(4)]
    assert turns == [ada.id, bea.id, ada.id, bea.id]  # Cy is off duty: never picked


@pytest.mark.parametrize(
    "desk_app", [{"desk_round_robin": True, "desk_reassign_after_minutes": 0.01}], indirect=True
)  # fmt: skip
def test_a_conversation_nobody_answers_in_time_goes_to_the_next_teammate(desk_app: TestClient) -> None:
    engine = desk_app.app.state.services.engine
    ada = make_staff(engine, "ada@example.com", "Ada Admin", StaffRole.admin)
    bea = make_staff(engine, "bea@example.com", "Bea Staff")
    cid, _ = handed_off(desk_app)
    first = assignee(desk_app, ada, cid)
    assert first == ada.id
    wait_for(lambda: assignee(desk_app, ada, cid) == bea.id, what="the reassignment to Bea")
    audit = desk_app.get("/api/staff/audit", params={"action": "desk.reassign"}, cookies=ada.cookies).json()
    assert audit[0]["target"] == f"conversation:{cid}" and audit[0]["details"]["from_staff"] == ada.id

    # Once someone answered, it stays with them.
    answered, _ = handed_off(desk_app)
    owner = next(s for s in (ada, bea) if s.id == assignee(desk_app, ada, answered))
    desk_app.post(f"/api/staff/conversations/{answered}/claim", cookies=owner.cookies, headers=owner.headers)
    desk_app.post(f"/api/staff/conversations/{answered}/messages", json={"text": "Bonjour ! Je regarde."},
                  cookies=owner.cookies, headers=owner.headers)  # fmt: skip
    with Session(engine) as session:
        ticket = crud.get_ticket(session=session, conversation_id=answered)
        assert ticket is not None and ticket.first_response_at is not None
    kept = assignee(desk_app, ada, answered)
    time.sleep(1.5)  # more than twice the reassignment time
    assert assignee(desk_app, ada, answered) == kept


@pytest.mark.parametrize("desk_app", [{"desk_first_response_minutes": 0.001}], indirect=True)
def test_the_inbox_times_the_first_response_and_flags_the_overdue(desk_app: TestClient) -> None:
    engine = desk_app.app.state.services.engine
    ada = make_staff(engine, "ada@example.com", "Ada Admin", StaffRole.admin)
    cid, _ = handed_off(desk_app)
    wait_for(lambda: inbox(desk_app, ada)[cid]["first_response_overdue"], what="the overdue flag")
    row = inbox(desk_app, ada)[cid]
    assert row["first_response_s"] > 0.06 and row["open_s"] > 0 and row["first_response_at"] is None

    desk_app.post(f"/api/staff/conversations/{cid}/claim", cookies=ada.cookies, headers=ada.headers)
    desk_app.post(f"/api/staff/conversations/{cid}/messages", json={"text": "Bonjour, je suis là."},
                  cookies=ada.cookies, headers=ada.headers)  # fmt: skip
    row = inbox(desk_app, ada)[cid]
    assert row["first_response_at"] is not None and not row["first_response_overdue"]
    desk_app.post(f"/api/staff/conversations/{cid}/resolve", cookies=ada.cookies, headers=ada.headers)
    row = inbox(desk_app, ada)[cid]
    assert row["resolved_at"] is not None and row["open_s"] is None and not row["resolution_overdue"]


def test_a_canned_reply_fills_in_what_the_conversation_knows(desk_app: TestClient) -> None:
    engine = desk_app.app.state.services.engine
    bea = make_staff(engine, "bea@example.com", "Bea Staff")
    created = desk_app.post(
        "/api/staff/canned-replies", cookies=bea.cookies, headers=bea.headers,
        json={"title": "Refund sent", "text": "Hi {customer_name}, {agent_name} from {company_name} here: the "
              "refund for {order_number} is on its way. Tracking: {tracking}."},
    )  # fmt: skip
    assert created.status_code == 201
    again = desk_app.post("/api/staff/canned-replies", json={"title": "Refund sent", "text": "x"},
                          cookies=bea.cookies, headers=bea.headers)  # fmt: skip
    assert again.status_code == 409
    cid, customer = open_conversation(desk_app)
    send(desk_app, cid, customer, "Hello, my name is Grace Hopper and my order LL-204811 needs a refund.")
    filled = desk_app.get(f"/api/staff/conversations/{cid}/canned-replies/{created.json()['id']}", cookies=bea.cookies)
    assert filled.json()["text"] == (
        "Hi Grace Hopper, Bea Staff from Lumen & Loom here: the refund for LL-204811 is on its way. "
        "Tracking: {tracking}."  # no value: kept for the teammate to fill in
    )


def test_internal_notes_never_reach_the_customer(desk_app: TestClient) -> None:
    engine = desk_app.app.state.services.engine
    bea = make_staff(engine, "bea@example.com", "Bea Staff")
    cid, customer = handed_off(desk_app)
    secret = "NOTE-7f3a: customer was rude last week, refund already refused once"
    added = desk_app.post(f"/api/staff/conversations/{cid}/notes", json={"text": secret}, cookies=bea.cookies,
                          headers=bea.headers)  # fmt: skip
    assert added.status_code == 201 and added.json()["author"] == "Bea Staff"
    assert [n["text"] for n in desk_app.get(f"/api/staff/conversations/{cid}/notes", cookies=bea.cookies).json()] == [
        secret
    ]
    desk_app.post(f"/api/staff/conversations/{cid}/claim", cookies=bea.cookies, headers=bea.headers)
    desk_app.post(f"/api/staff/conversations/{cid}/messages", json={"text": "Bonjour, Bea ici."}, cookies=bea.cookies,
                  headers=bea.headers)  # fmt: skip

    seen = [
        desk_app.get(f"/api/conversations/{cid}", headers=customer).text,
        desk_app.get(f"/api/conversations/{cid}/feedback", headers=customer).text,
        desk_app.get("/api/widget/config").text,
    ]
    with desk_app.stream("GET", f"/api/conversations/{cid}/events", headers=customer) as stream:
        lines = []
        for line in stream.iter_lines():
            lines.append(line)
            if "Bea ici" in line:
                break
        seen.append("\n".join(lines))
    transcript = json.loads(seen[0])
    assert [m["role"] for m in transcript["messages"]][-1] == "staff"  # the reply is there, the note is not
    for body in seen:
        assert "NOTE-7f3a" not in body
    # A customer's token opens no staff route.
    assert desk_app.get(f"/api/staff/conversations/{cid}/notes", headers=customer).status_code == 401
