"""Reviews, intent relabels, tags and conversation marks; concurrent edits never leave a mixed review."""

import threading

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from conversations import crud
from conversations.models import ReviewRating
from tests.utils.store import bot, customer, make_conversation, staff


@pytest.fixture
def reply(session: Session) -> tuple[str, int, int]:
    """A conversation's id, its customer message id and its bot reply id."""
    conversation, messages = make_conversation(
        session, customer("Where is my parcel?", "order_status", 0.91), bot("It left the warehouse today.")
    )
    return conversation.id, messages[0].id, messages[1].id  # type: ignore[return-value]


def test_review_versions_and_stale_edit_is_refused(session: Session, reply: tuple[str, int, int]) -> None:
    _, _, bot_id = reply
    first = crud.save_review(
        session=session,
        message_id=bot_id,
        rating="bad",
        corrected_text=" Tomorrow. ",
        reviewer_id=7,
        expected_version=0,
    )
    assert (first.version, first.rating, first.corrected_text, first.reviewer_id) == (
        1,
        ReviewRating.bad,
        "Tomorrow.",
        7,
    )
    second = crud.save_review(
        session=session, message_id=bot_id, rating=ReviewRating.good, reviewer_id=8, expected_version=1
    )
    assert (second.version, second.rating, second.corrected_text, second.reviewer_id) == (2, ReviewRating.good, None, 8)

    with pytest.raises(crud.ReviewConflict) as conflict:
        crud.save_review(session=session, message_id=bot_id, rating="bad", corrected_text="x", expected_version=1)
    assert conflict.value.current_version == 2 and "reload" in str(conflict.value)
    with pytest.raises(crud.ReviewConflict):  # "there was no review" is stale too
        crud.save_review(session=session, message_id=bot_id, rating="bad", expected_version=0)
    stored = crud.get_review(session=session, message_id=bot_id)
    assert stored is not None and (stored.version, stored.rating, stored.reviewer_id) == (2, ReviewRating.good, 8)


def test_only_bot_replies_are_reviewed(session: Session, reply: tuple[str, int, int]) -> None:
    conversation_id, customer_id, _ = reply
    with pytest.raises(crud.NotABotMessage):
        crud.save_review(session=session, message_id=customer_id, rating="good", expected_version=0)
    with pytest.raises(crud.MessageNotFound):
        crud.save_review(session=session, message_id=999_999, rating="good", expected_version=0)
    with pytest.raises(ValueError):
        crud.save_review(session=session, message_id=reply[2], rating="great", expected_version=0)
    _, messages = make_conversation(session, staff("Let me check that for you."))
    with pytest.raises(crud.NotABotMessage):
        crud.save_review(session=session, message_id=messages[0].id, rating="good", expected_version=0)  # type: ignore[arg-type]
    assert crud.list_reviews(session=session, conversation_id=conversation_id) == []


def _race(engine: Engine, message_id: int, expected_version: int) -> tuple[list[dict], list[Exception]]:
    """Two reviewers save different edits of the same version at the same moment."""
    edits = [
        {"rating": "good", "corrected_text": None, "reviewer_id": 1},
        {"rating": "bad", "corrected_text": "It ships tomorrow; here is your tracking link.", "reviewer_id": 2},
    ]
    barrier = threading.Barrier(2)
    saved: list[dict] = []
    errors: list[Exception] = []

    def reviewer(edit: dict) -> None:
        with Session(engine) as own:
            barrier.wait()
            try:
                crud.save_review(session=own, message_id=message_id, expected_version=expected_version, **edit)
                saved.append(edit)
            except Exception as error:  # noqa: BLE001  (collected and checked below)
                errors.append(error)

    threads = [threading.Thread(target=reviewer, args=(edit,)) for edit in edits]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return saved, errors


@pytest.mark.parametrize("expected_version", [0, 1], ids=["first-review", "edit"])
def test_concurrent_edits_keep_one_whole_version(
    engine: Engine, session: Session, reply: tuple[str, int, int], expected_version: int
) -> None:
    _, _, bot_id = reply
    for round_number in range(4):
        if expected_version == 1:
            current = crud.get_review(session=session, message_id=bot_id)
            base = 0 if current is None else current.version
            crud.save_review(session=session, message_id=bot_id, rating="good", reviewer_id=99, expected_version=base)
            version = base + 1
        else:
            version = 0
            if round_number:
                break  # a first review happens once per reply
        saved, errors = _race(engine, bot_id, version)
        assert len(saved) == 1 and len(errors) == 1, (saved, errors)
        assert isinstance(errors[0], crud.ReviewConflict), errors[0]
        session.expire_all()
        stored = crud.get_review(session=session, message_id=bot_id)
        assert stored is not None and stored.version == version + 1
        winner = saved[0]
        assert (stored.rating.value, stored.corrected_text, stored.reviewer_id) == (
            winner["rating"],
            winner["corrected_text"],
            winner["reviewer_id"],
        )


def test_relabel_keeps_the_prediction(session: Session, reply: tuple[str, int, int]) -> None:
    conversation_id, customer_id, bot_id = reply
    first = crud.relabel_intent(session=session, message_id=customer_id, new_intent="shipping_delay", reviewer_id=3)
    assert (first.old_intent, first.new_intent, first.reviewer_id) == ("order_status", "shipping_delay", 3)
    again = crud.relabel_intent(session=session, message_id=customer_id, new_intent=" returns ", reviewer_id=4)
    assert (again.id, again.old_intent, again.new_intent, again.reviewer_id) == (first.id, "order_status", "returns", 4)
    assert [r.new_intent for r in crud.list_relabels(session=session, conversation_id=conversation_id)] == ["returns"]
    with pytest.raises(crud.NotACustomerMessage):
        crud.relabel_intent(session=session, message_id=bot_id, new_intent="returns")
    with pytest.raises(crud.InvalidLabel):
        crud.relabel_intent(session=session, message_id=customer_id, new_intent="   ")


def test_tags_are_added_once_and_removed(session: Session, reply: tuple[str, int, int]) -> None:
    conversation_id = reply[0]
    other, _ = make_conversation(session, customer("hi"))
    crud.add_tag(session=session, conversation_id=conversation_id, name="Refund", reviewer_id=1)
    crud.add_tag(session=session, conversation_id=conversation_id, name="refund ")
    crud.add_tag(session=session, conversation_id=conversation_id, name="angry-customer")
    crud.add_tag(session=session, conversation_id=other.id, name="refund")
    assert crud.list_tags(session=session, conversation_id=conversation_id) == ["angry-customer", "refund"]
    assert [tag.name for tag in crud.list_all_tags(session=session)] == ["angry-customer", "refund"]
    assert crud.remove_tag(session=session, conversation_id=conversation_id, name="REFUND") is True
    assert crud.remove_tag(session=session, conversation_id=conversation_id, name="refund") is False
    assert crud.list_tags(session=session, conversation_id=conversation_id) == ["angry-customer"]
    assert crud.list_tags(session=session, conversation_id=other.id) == ["refund"]
    with pytest.raises(crud.InvalidLabel):
        crud.add_tag(session=session, conversation_id=conversation_id, name="x" * 65)
    with pytest.raises(crud.ConversationNotFound):
        crud.add_tag(session=session, conversation_id="missing", name="refund")


def test_conversation_marks_are_versioned(session: Session, reply: tuple[str, int, int]) -> None:
    conversation_id = reply[0]
    mark = crud.mark_conversation(
        session=session,
        conversation_id=conversation_id,
        reviewed=True,
        use_for_training=False,
        reviewer_id=5,
        expected_version=0,
    )
    assert (mark.version, mark.reviewed, mark.use_for_training) == (1, True, False)
    mark = crud.mark_conversation(
        session=session,
        conversation_id=conversation_id,
        reviewed=True,
        use_for_training=True,
        reviewer_id=6,
        expected_version=1,
    )
    assert (mark.version, mark.use_for_training, mark.reviewer_id) == (2, True, 6)
    with pytest.raises(crud.ReviewConflict):
        crud.mark_conversation(
            session=session, conversation_id=conversation_id, reviewed=False, use_for_training=False, expected_version=1
        )
    stored = crud.get_conversation_review(session=session, conversation_id=conversation_id)
    assert stored is not None and (stored.version, stored.reviewed, stored.use_for_training) == (2, True, True)
