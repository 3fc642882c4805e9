"""The retention job anonymises or deletes conversations idle past the period, and only those."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, select

from conversations import crud
from conversations.models import ConversationTag, CsatRating, Feedback, Message, Rating, Review, Role
from conversations.retention import InvalidRetention, apply_retention

NOW = datetime(2025, 6, 1, tzinfo=UTC)
PERSONAL = "I'm jane@example.com, card 4111 1111 1111 1111"


@pytest.fixture
def old_and_new(session: Session) -> tuple[tuple[str, str], tuple[str, str]]:
    """(id, token) of a conversation idle for 400 days and of one idle for 10 days, both with personal data."""
    made = []
    for days in (400, 10):
        conversation, token = crud.create_conversation(
            session=session, verified_user_id="c-7", verified_email="jane@example.com"
        )
        customer_message = crud.add_message(
            session=session, conversation_id=conversation.id, role=Role.customer, text=PERSONAL
        )
        reply = crud.add_message(
            session=session,
            conversation_id=conversation.id,
            role=Role.bot,
            text="ok",
            trace={"slots": {"email": "jane@example.com"}},
        )
        crud.save_dialogue_state(
            session=session,
            conversation_id=conversation.id,
            status=conversation.status,
            slots={"email": "jane@example.com"},
            misses=0,
            negative_streak=0,
            pending_intent=None,
            pending_action={"name": "cancel_order", "inputs": {"email": "jane@example.com"}, "key": "k"},
        )
        crud.save_review(
            session=session,
            message_id=reply.id,  # type: ignore[arg-type]
            rating="bad",
            expected_version=0,
            corrected_text="We will write to jane@example.com",
        )
        crud.rate_reply(session=session, conversation_id=conversation.id, message_id=reply.id, rating=Rating.up)  # type: ignore[arg-type]
        crud.rate_conversation(session=session, conversation_id=conversation.id, score=2, comment="call 555-123-4567")
        crud.add_tag(session=session, conversation_id=conversation.id, name="kept")
        assert customer_message.id is not None
        stored = crud.get_conversation(session=session, conversation_id=conversation.id)
        stored.updated_at = stored.created_at = NOW - timedelta(days=days)
        session.add(stored)
        session.commit()
        made.append((conversation.id, token))
    return made[0], made[1]


def test_anonymise_masks_old_conversations_only(session: Session, old_and_new) -> None:
    (old_id, old_token), (new_id, new_token) = old_and_new
    result = apply_retention(session=session, now=NOW, keep_days=365)
    assert (result.conversations, result.messages) == (1, 1)
    session.expire_all()

    old = crud.get_conversation(session=session, conversation_id=old_id)
    assert [m.text for m in crud.list_messages(session=session, conversation_id=old_id)] == [
        "I'm [email], card [card]",
        "ok",
    ]
    assert old.slots == {"email": "[email]"}
    assert (old.verified_user_id, old.verified_email, old.pending_action) == (None, None, None)
    assert crud.list_messages(session=session, conversation_id=old_id)[1].trace == {"slots": {"email": "[email]"}}
    assert crud.list_reviews(session=session, conversation_id=old_id)[0].corrected_text == "We will write to [email]"
    assert crud.get_csat(session=session, conversation_id=old_id).comment == "call [phone]"  # type: ignore[union-attr]
    with pytest.raises(crud.ConversationAccessDenied):  # the customer's token no longer opens it
        crud.open_conversation(session=session, conversation_id=old_id, token=old_token)

    assert crud.list_messages(session=session, conversation_id=new_id)[0].text == PERSONAL
    assert crud.get_conversation(session=session, conversation_id=new_id).verified_email == "jane@example.com"
    assert crud.open_conversation(session=session, conversation_id=new_id, token=new_token).slots == {
        "email": "jane@example.com"
    }
    # Done once: the next run finds nothing more to anonymise.
    again = apply_retention(session=session, now=NOW, keep_days=365)
    assert (again.conversations, again.messages) == (0, 0)


def test_delete_removes_old_conversations_with_everything_attached(session: Session, old_and_new) -> None:
    (old_id, _), (new_id, new_token) = old_and_new
    result = apply_retention(session=session, now=NOW, keep_days=365, mode="delete")
    assert (result.conversations, result.messages) == (1, 2)
    session.expire_all()
    with pytest.raises(crud.ConversationNotFound):
        crud.get_conversation(session=session, conversation_id=old_id)
    for table in (Message, Review, Feedback, CsatRating, ConversationTag):
        remaining = session.exec(select(table).where(table.conversation_id == old_id)).all()  # type: ignore[attr-defined]
        assert remaining == [], table
    assert len(crud.list_messages(session=session, conversation_id=new_id)) == 2
    assert crud.list_tags(session=session, conversation_id=new_id) == ["kept"]
    assert crud.open_conversation(session=session, conversation_id=new_id, token=new_token)
    # A shorter period reaches the newer one too.
    assert apply_retention(session=session, now=NOW, keep_days=5, mode="delete").conversations == 1


def test_retention_needs_a_real_period(session: Session) -> None:
    with pytest.raises(InvalidRetention, match="at least 1"):
        apply_retention(session=session, now=NOW, keep_days=0)
    with pytest.raises(InvalidRetention, match="anonymise"):
        apply_retention(session=session, now=NOW, keep_days=30, mode="shred")  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["anonymise", "delete"])
def test_retention_reaches_datasets_and_old_report_samples(session: Session, old_and_new, tmp_path, mode) -> None:
    (old_id, _), (new_id, _) = old_and_new
    datasets = tmp_path / "datasets"
    for name, ids in {"with-old": [old_id, new_id], "only-new": [new_id]}.items():
        (datasets / name).mkdir(parents=True)
        (datasets / name / "dataset.jsonl").write_text(
            "".join(json.dumps({"id": i, "messages": []}) + "\n" for i in ids)
        )
    sample = {"prompt": "Where is my refund? jane@example.com", "reply": "Soon.", "reference": "Soon."}
    runs = []
    for days in (400, 10):
        run = crud.create_training_run(session=session, trigger="manual")
        run.created_at = NOW - timedelta(days=days)
        run.status = "finished"
        run.report = {
            "candidate": {"model": "v2", "samples": [sample]},
            "in_service": {"model": "v1", "samples": [sample]},
            "decision": {"promote": True},
        }
        session.add(run)
        session.commit()
        runs.append(run.id)

    result = apply_retention(session=session, now=NOW, keep_days=365, mode=mode, datasets_dir=datasets)
    assert (result.datasets, result.reports) == (1, 1)
    assert not (datasets / "with-old").exists() and (datasets / "only-new" / "dataset.jsonl").exists()
    session.expire_all()
    old_run, new_run = (crud.get_training_run(session=session, run_id=run_id) for run_id in runs)
    assert old_run.report["candidate"]["samples"] == [] and old_run.report["in_service"]["samples"] == []
    assert old_run.report["decision"] == {"promote": True}, "the decision and scores stay"
    assert new_run.report["candidate"]["samples"] == [sample]
