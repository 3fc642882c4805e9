"""A customer's data rights in the store: find by e-mail, export everything as JSON, and erase leaving no trace in
any table (every column of every row is searched afterwards), nor in the datasets built from the store."""

import json
from pathlib import Path

import pytest
from sqlalchemy import select as sa_select
from sqlmodel import Session, SQLModel

from conversations import crud
from conversations.data_rights import InvalidEmail, erase_customer, export_customer, find_customer
from conversations.db import make_engine, upgrade_db
from conversations.models import RateCount, Rating, ReviewRating, Role, StaffRole, TrainingRun

EMAIL = "Grace.Hopper@Example.com"
ORDER = "LL-555111"
COMPLAINT = f"Hello, my e-mail is {EMAIL.lower()} and order {ORDER} arrived with a cracked shade."


def seed_customer(session: Session, datasets: Path) -> tuple[str, str, str]:
    """Grace's two conversations, touched by every part of the product, and another customer's one."""
    staff = crud.create_staff(session=session, email="sam@example.com", display_name="Sam", password_hash="x",
                              role=StaffRole.staff)  # fmt: skip
    assert staff.id is not None
    first, _ = crud.create_conversation(session=session, channel="widget")
    asked = crud.add_message(session=session, conversation_id=first.id, role=Role.customer, text=COMPLAINT,
                             intent="return_item")  # fmt: skip
    slots = {"email": EMAIL.lower(), "order_number": ORDER}
    answer = crud.add_message(session=session, conversation_id=first.id, role=Role.bot, text="Passing you on.",
                              decision="handoff", trace={"slots": slots})  # fmt: skip
    crud.save_dialogue_state(session=session, conversation_id=first.id, status="pending_human",
                             slots={"email": EMAIL.lower(), "order_number": ORDER}, misses=0, negative_streak=0,
                             pending_intent=None, attention_reason=f"handoff: about {ORDER}")  # fmt: skip
    crud.rate_reply(session=session, conversation_id=first.id, message_id=answer.id, rating=Rating.down)
    crud.rate_conversation(session=session, conversation_id=first.id, score=1, comment=f"Write to {EMAIL}")
    crud.save_review(session=session, message_id=answer.id, rating=ReviewRating.bad, reviewer_id=staff.id,
                     corrected_text=f"Sorry about order {ORDER}!", expected_version=0)  # fmt: skip
    crud.relabel_intent(session=session, message_id=asked.id, new_intent="damaged_item", reviewer_id=staff.id)
    crud.add_tag(session=session, conversation_id=first.id, name="broken-item", reviewer_id=staff.id)
    crud.mark_conversation(session=session, conversation_id=first.id, reviewed=True, use_for_training=True,
                           reviewer_id=staff.id, expected_version=0)  # fmt: skip
    crud.open_ticket(session=session, conversation_id=first.id, reason="intent damaged_item", outside_hours=True)
    crud.set_customer_email(session=session, conversation_id=first.id, email=EMAIL.lower())
    crud.claim_conversation(session=session, conversation_id=first.id, staff_id=staff.id)
    crud.post_staff_message(session=session, conversation_id=first.id, staff_id=staff.id, text="A new shade is coming.")
    crud.add_note(session=session, conversation_id=first.id, staff_id=staff.id, author="Sam",
                  text=f"Grace's second broken lamp ({ORDER})")  # fmt: skip
    crud.enqueue_alert(session=session, event="handoff", conversation_id=first.id, payload={"text": COMPLAINT},
                       emails=["sam@example.com"])  # fmt: skip
    crud.record_audit(session=session, actor_id=staff.id, action="takeover.claim", target=f"conversation:{first.id}")
    session.add(RateCount(key=f"send:conversation:{first.id}", window_start=1, hits=3))
    session.add(TrainingRun(status="finished", report={"candidate": {"rouge_l": 0.4, "samples": [
        {"prompt": COMPLAINT, "reply": "Passing you on.", "reference": "x"}]}}))  # fmt: skip
    session.commit()

    second, _ = crud.create_conversation(session=session, channel="api")
    crud.add_message(session=session, conversation_id=second.id, role=Role.customer,
                     text=f"It's {EMAIL.upper()} again: where is my refund?")  # fmt: skip

    other, _ = crud.create_conversation(session=session, channel="widget")
    crud.add_message(session=session, conversation_id=other.id, role=Role.customer, text="Do you ship to Canada?")
    crud.record_audit(session=session, actor_id=staff.id, action="takeover.claim", target=f"conversation:{other.id}")

    for name, ids in (("run-1", [first.id, other.id]), ("run-2", [other.id])):
        (datasets / name).mkdir(parents=True)
        lines = [json.dumps({"id": cid, "messages": []}) for cid in ids]
        (datasets / name / "dataset.jsonl").write_text("\n".join(lines) + "\n")
    return first.id, second.id, other.id


def every_value(session: Session) -> list[str]:
    """Every value of every column of every row of every table, as text (JSON columns as JSON)."""
    values = []
    for table in SQLModel.metadata.sorted_tables:
        for row in session.connection().execute(sa_select(table)).all():
            values += [json.dumps(value) if isinstance(value, dict | list) else str(value) for value in row]
    return values


def test_find_and_export_everything_about_a_customer(engine, tmp_path: Path) -> None:
    with Session(engine) as session:
        first, second, other = seed_customer(session, tmp_path / "datasets")
        assert [c.id for c in find_customer(session=session, email=" grace.hopper@example.COM ")] == [first, second]
        document = export_customer(session=session, email=EMAIL)
        with pytest.raises(InvalidEmail):
            find_customer(session=session, email="not an address")
    json.dumps(document)  # ready to download
    exported = {item["conversation"]["id"]: item for item in document["conversations"]}
    assert set(exported) == {first, second}
    grace = exported[first]
    assert [m["text"] for m in grace["messages"]][0] == COMPLAINT and "token_hash" not in grace["conversation"]
    assert grace["support_ticket"]["customer_email"] == EMAIL.lower()
    assert grace["internal_notes"][0]["text"].startswith("Grace's second broken lamp")
    assert grace["satisfaction"]["comment"] == f"Write to {EMAIL}" and grace["ratings"][0]["rating"] == "down"
    assert grace["alerts_sent"][0]["event"] == "handoff" and grace["tags"] == ["broken-item"]


def test_erasing_a_customer_leaves_no_trace_in_any_table(engine, tmp_path: Path) -> None:
    datasets = tmp_path / "datasets"
    with Session(engine) as session:
        first, second, other = seed_customer(session, datasets)
        before = every_value(session)
        assert any(ORDER in value for value in before) and any(first in value for value in before)

        erased = erase_customer(session=session, email=EMAIL, datasets_dir=datasets)
        assert (erased.conversations, erased.messages, erased.datasets) == (2, 4, 1)
        assert erased.reports == 1 and erased.rate_counts == 1 and erased.audit_entries == 1

        after = every_value(session)
        for trace in (EMAIL.lower(), ORDER, first, second, "cracked shade", "where is my refund", "broken lamp"):
            found = [value for value in after if trace in value.lower() or trace in value]
            assert not found, f"{trace!r} is still stored: {found[:3]}"
        # The other customer is untouched, and so is the retraining run's score.
        assert [m.text for m in crud.list_messages(session=session, conversation_id=other)] == [
            "Do you ship to Canada?"
        ]
        [run] = crud.list_training_runs(session=session)
        assert run.report["candidate"] == {"rouge_l": 0.4, "samples": []}
        assert find_customer(session=session, email=EMAIL) == []
    assert not (datasets / "run-1").exists() and (datasets / "run-2" / "dataset.jsonl").exists()


def test_the_command_line_erases_a_customer_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from cli.main import app
    from core.settings import get_settings

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("SUPPORTBOT_DATABASE_URL", url)
    monkeypatch.setenv("SUPPORTBOT_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    engine = make_engine(url)
    upgrade_db(engine)
    try:
        with Session(engine) as session:
            first, second, other = seed_customer(session, tmp_path / "datasets")
        result = CliRunner().invoke(app, ["store", "erase", "--email", EMAIL, "--yes"])
        assert result.exit_code == 0, result.output
        assert "Erased 2 conversation(s)" in result.output
        with Session(engine) as session:
            assert find_customer(session=session, email=EMAIL) == []
            assert crud.list_audit(session=session, action="data.erase")[0].actor_id is None
        assert CliRunner().invoke(app, ["store", "erase", "--email", "nope", "--yes"]).exit_code == 2
    finally:
        engine.dispose()
        get_settings.cache_clear()
