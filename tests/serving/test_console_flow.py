"""The staff console's JSON API end to end: take a conversation over from the bot, answer the customer,
hand it back, resolve it; review, relabel, tag and filter; and find all of it in the audit log.

The app runs in-process on a fresh database with the session's real vLLM server behind the bot.
"""

from fastapi.testclient import TestClient

from conversations.models import ConversationStatus, StaffRole
from tests.utils.conversation import open_conversation, send
from tests.utils.staff import PASSWORD, Staff, make_staff, seed_conversation


def act_as(client: TestClient, who: Staff) -> dict[str, str]:
    """Use `who`'s session cookie from now on; returns the CSRF header their writes need."""
    client.cookies.clear()
    client.cookies.update(who.cookies)
    return who.headers


def names(events: list[tuple[str, dict]]) -> list[str]:
    return [name for name, _ in events]


def test_takeover_silences_the_bot_until_handed_back(test_client: TestClient) -> None:
    engine = test_client.app.state.services.engine  # type: ignore[attr-defined]
    admin = make_staff(engine, "admin@example.com", "Ada Admin", StaffRole.admin)
    colleague = make_staff(engine, "cole@example.com", "Cole Colleague")

    # An admin creates Sam's account; Sam signs in with the password.
    headers = act_as(test_client, admin)
    account = {"email": "Sam@Example.com", "display_name": "Sam", "password": PASSWORD, "role": "staff"}
    created = test_client.post("/api/staff/accounts", json=account, headers=headers)
    assert created.status_code == 201, created.text
    assert created.json()["email"] == "sam@example.com" and "password_hash" not in created.json()
    test_client.cookies.clear()
    signed = test_client.post("/api/staff/session", json={"email": "sam@example.com", "password": PASSWORD})
    assert signed.status_code == 200, signed.text
    sam = {"X-CSRF-Token": signed.json()["csrf_token"]}
    sam_cookie = dict(test_client.cookies)

    # The customer talks to the bot.
    cid, customer = open_conversation(test_client)
    first = send(test_client, cid, customer, "Hello! How long do I have to return a lamp?")
    assert "bot_message" in names(first)

    test_client.cookies.clear()
    test_client.cookies.update(sam_cookie)
    claimed = test_client.post(f"/api/staff/conversations/{cid}/claim", headers=sam)
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["status"] == "human" and claimed.json()["owner"] == "Sam"

    # While Sam has it, the bot says nothing.
    test_client.cookies.clear()
    quiet = send(test_client, cid, customer, "Is anyone there?")
    assert names(quiet) == ["customer_message", "conversation", "done"]
    assert quiet[1][1]["status"] == "human"

    test_client.cookies.update(sam_cookie)
    reply = test_client.post(
        f"/api/staff/conversations/{cid}/messages", json={"text": "Hi, Sam here. 30 days."}, headers=sam
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["role"] == "staff" and reply.json()["author"] == "Sam"

    # A colleague can neither take it from Sam nor answer in it.
    headers = act_as(test_client, colleague)
    assert test_client.post(f"/api/staff/conversations/{cid}/claim", headers=headers).status_code == 409
    other = test_client.post(f"/api/staff/conversations/{cid}/messages", json={"text": "me too"}, headers=headers)
    assert other.status_code == 409 and other.json()["error"]["code"] == "not_your_conversation"

    # The customer's transcript shows Sam's reply under Sam's name.
    test_client.cookies.clear()
    transcript = test_client.get(f"/api/conversations/{cid}", headers=customer).json()
    staff_turns = [m for m in transcript["messages"] if m["role"] == "staff"]
    assert [(m["text"], m["author"]) for m in staff_turns] == [("Hi, Sam here. 30 days.", "Sam")]

    test_client.cookies.update(sam_cookie)
    back = test_client.post(f"/api/staff/conversations/{cid}/hand-back", headers=sam)
    assert back.status_code == 200
    assert back.json()["status"] == "bot" and back.json()["needs_attention"] is False and back.json()["owner"] is None

    # The bot answers again.
    test_client.cookies.clear()
    again = send(test_client, cid, customer, "Thanks. And how long does shipping take?")
    bot = [data for name, data in again if name == "bot_message"]
    assert len(bot) == 1 and not bot[0]["failed"] and bot[0]["text"]

    test_client.cookies.update(sam_cookie)
    resolved = test_client.post(f"/api/staff/conversations/{cid}/resolve", headers=sam)
    assert resolved.status_code == 200 and resolved.json()["status"] == "resolved"
    assert test_client.post(f"/api/staff/conversations/{cid}/claim", headers=sam).status_code == 409

    # Staff cannot read the audit log; the admin sees every takeover step and the account creation.
    assert test_client.get("/api/staff/audit").status_code == 403
    headers = act_as(test_client, admin)
    entries = test_client.get("/api/staff/audit").json()
    takeover = [(e["action"], e["target"]) for e in reversed(entries) if e["action"].startswith("takeover.")]
    target = f"conversation:{cid}"
    assert takeover == [
        ("takeover.claim", target),
        ("takeover.reply", target),
        ("takeover.hand_back", target),
        ("takeover.resolve", target),
    ]
    sam_id = created.json()["id"]
    assert all(e["actor_id"] == sam_id for e in entries if e["action"].startswith("takeover."))
    creations = [e for e in entries if e["action"] == "staff.create"]
    assert [(e["actor_id"], e["target"]) for e in creations] == [(admin.id, f"staff:{sam_id}")]


def test_review_relabel_tag_mark_and_filter(test_client: TestClient) -> None:
    engine = test_client.app.state.services.engine  # type: ignore[attr-defined]
    reviewer = make_staff(engine, "rita@example.com", "Rita Reviewer")
    waiting, _, ids = seed_conversation(engine, status=ConversationStatus.pending_human, reason="handoff: complaint")
    calm, _, _ = seed_conversation(engine)
    headers = act_as(test_client, reviewer)
    base = f"/api/staff/conversations/{waiting}"

    review = {"rating": "bad", "corrected_text": "Sorry it broke! We'll send a new shade.", "expected_version": 0}
    saved = test_client.put(f"{base}/messages/{ids['answer']}/review", json=review, headers=headers)
    assert saved.status_code == 200, saved.text
    assert saved.json()["version"] == 1 and saved.json()["reviewer_id"] == reviewer.id
    stale = test_client.put(f"{base}/messages/{ids['answer']}/review", json=review, headers=headers)
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "review_conflict"
    customer_turn = test_client.put(f"{base}/messages/{ids['ask']}/review", json=review, headers=headers)
    assert customer_turn.status_code == 422

    intent = f"{base}/messages/{ids['ask']}/intent"
    relabel = test_client.put(intent, json={"new_intent": "damaged_item"}, headers=headers)
    assert relabel.status_code == 200 and relabel.json()["old_intent"] == "return_item"
    unknown = test_client.put(intent, json={"new_intent": "astrology"}, headers=headers)
    assert unknown.status_code == 422
    assert test_client.post(f"{base}/tags", json={"name": "Broken-Item"}, headers=headers).json() == {
        "tags": ["broken-item"]
    }
    mark = {"reviewed": True, "use_for_training": True, "expected_version": 0}
    assert test_client.put(f"{base}/review", json=mark, headers=headers).status_code == 200

    transcript = test_client.get(base).json()
    by_id = {m["id"]: m for m in transcript["messages"]}
    assert by_id[ids["answer"]]["review"]["corrected_text"].startswith("Sorry it broke")
    assert by_id[ids["answer"]]["feedback"] == "down"
    assert by_id[ids["answer"]]["trace"]["top_intents"][0] == ["return_item", 0.62]
    assert by_id[ids["answer"]]["model"] == "domain-v1"
    assert by_id[ids["ask"]]["relabel"]["new_intent"] == "damaged_item"
    assert transcript["tags"] == ["broken-item"] and transcript["mark"]["use_for_training"] is True

    def listed(**params: str) -> list[str]:
        response = test_client.get("/api/staff/conversations", params=params)
        assert response.status_code == 200, response.text
        return [row["id"] for row in response.json()["conversations"]]

    everything = listed()
    assert everything.index(waiting) < everything.index(calm), "waiting for a human comes first"
    assert waiting in listed(reviewed="true") and calm not in listed(reviewed="true")
    assert calm in listed(reviewed="false") and waiting not in listed(reviewed="false")
    assert listed(tag="broken-item") == [waiting]
    assert waiting in listed(rating="bad") and calm not in listed(rating="bad")
    assert waiting in listed(intent="damaged_item") and calm not in listed(intent="damaged_item")
    assert waiting in listed(status="pending_human") and calm not in listed(status="pending_human")
    assert waiting in listed(handed_off="true") and calm in listed(handed_off="false")
    assert {waiting, calm} <= set(listed(search="CRACKED shade", low_confidence="0.7"))
    assert waiting not in listed(low_confidence="0.5")
    bad = test_client.get("/api/staff/conversations", params={"created_from": "yesterday"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_filter"


def test_a_takeover_is_not_stuck_with_an_absent_colleague(test_client: TestClient) -> None:
    engine = test_client.app.state.services.engine  # type: ignore[attr-defined]
    admin = make_staff(engine, "admin@example.com", "Ada Admin", StaffRole.admin)
    away = make_staff(engine, "away@example.com", "Avery Away")
    other = make_staff(engine, "otto@example.com", "Otto Other")
    cid, _, _ = seed_conversation(engine, status=ConversationStatus.pending_human, reason="handoff")
    claim = f"/api/staff/conversations/{cid}/claim"

    assert test_client.post(claim, headers=act_as(test_client, away)).status_code == 200
    headers = act_as(test_client, other)
    assert test_client.post(claim, headers=headers).status_code == 409
    assert test_client.post(claim, params={"force": "true"}, headers=headers).status_code == 403

    # An admin steps in; the audit log says from whom the conversation was taken.
    headers = act_as(test_client, admin)
    assert test_client.post(claim, headers=headers).status_code == 409
    taken = test_client.post(claim, params={"force": "true"}, headers=headers)
    assert taken.status_code == 200 and taken.json()["owner"] == "Ada Admin"
    entry = test_client.get("/api/staff/audit", params={"action": "takeover.claim"}).json()[0]
    assert entry["actor_id"] == admin.id and entry["details"]["from_staff"] == away.id
    assert test_client.post(f"/api/staff/conversations/{cid}/hand-back", headers=headers).status_code == 200

    # A deactivated colleague's conversation can be taken by anyone.
    assert test_client.post(claim, headers=act_as(test_client, away)).status_code == 200
    headers = act_as(test_client, admin)
    deactivated = test_client.patch(f"/api/staff/accounts/{away.id}", json={"active": False}, headers=headers)
    assert deactivated.status_code == 200
    taken = test_client.post(claim, headers=act_as(test_client, other))
    assert taken.status_code == 200 and taken.json()["owner"] == "Otto Other"
