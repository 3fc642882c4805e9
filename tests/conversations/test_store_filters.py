"""Staff find conversations by every filter, on SQLite and PostgreSQL, with those needing a human first."""

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from conversations import crud
from conversations.filters import ConversationFilter, InvalidFilter
from conversations.models import ConversationStatus, Rating
from tests.utils.store import bot, customer, make_conversation

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def shop_session(module_engine: Engine) -> Iterator[Session]:
    with Session(module_engine) as session:
        yield session


@pytest.fixture(scope="module")
def shop(shop_session: Session) -> dict[str, str]:
    """Six conversations, each made to be found by some filters and not others; name -> id.

    Built once per engine; the tests using it only read.
    """
    session = shop_session

    def at(days_ago: float) -> datetime:
        return NOW - timedelta(days=days_ago)

    ids: dict[str, str] = {}
    refund, messages = make_conversation(
        session,
        customer("I want my money back for the Lamp", "refund", 0.95),
        bot("Sure, refunds take 5 days."),
        status=ConversationStatus.resolved,
        created_at=at(30),
    )
    ids["refund"] = refund.id
    crud.save_review(session=session, message_id=messages[1].id, rating="good", expected_version=0)  # type: ignore[arg-type]
    crud.rate_reply(session=session, conversation_id=refund.id, message_id=messages[1].id, rating=Rating.up)  # type: ignore[arg-type]
    crud.mark_conversation(
        session=session, conversation_id=refund.id, reviewed=True, use_for_training=True, expected_version=0
    )
    crud.add_tag(session=session, conversation_id=refund.id, name="refund")

    unsure, messages = make_conversation(
        session,
        customer("blorp the sprocket 100% now", "smalltalk", 0.21),
        bot("Sorry, could you rephrase?"),
        created_at=at(3),
    )
    ids["unsure"] = unsure.id
    crud.save_review(session=session, message_id=messages[1].id, rating="bad", expected_version=0)  # type: ignore[arg-type]
    crud.relabel_intent(session=session, message_id=messages[0].id, new_intent="order_status")  # type: ignore[arg-type]
    crud.rate_reply(session=session, conversation_id=unsure.id, message_id=messages[1].id, rating=Rating.down)  # type: ignore[arg-type]
    crud.mark_conversation(
        session=session, conversation_id=unsure.id, reviewed=True, use_for_training=False, expected_version=0
    )

    waiting, _ = make_conversation(
        session,
        customer("I need a human please", "handoff", 0.88),
        status=ConversationStatus.pending_human,
        created_at=at(10),
    )
    ids["waiting"] = waiting.id
    flagged, _ = make_conversation(
        session, customer("where is order LL-104233", "order_status", 0.7), created_at=at(5), needs_attention=True
    )
    ids["flagged"] = flagged.id
    taken, _ = make_conversation(
        session, customer("still waiting", "order_status", 0.6), status=ConversationStatus.human, created_at=at(2)
    )
    ids["taken"] = taken.id
    fresh, _ = make_conversation(session, customer("hello_there", "greeting", 0.99), channel="api", created_at=at(1))
    ids["fresh"] = fresh.id
    crud.add_tag(session=session, conversation_id=fresh.id, name="VIP")
    return ids


def found(session: Session, shop: dict[str, str], **conditions: object) -> set[str]:
    names = {conversation_id: name for name, conversation_id in shop.items()}
    page = crud.list_conversations(session=session, filters=ConversationFilter(**conditions, limit=100))
    return {names[conversation.id] for conversation in page}


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ({}, {"refund", "unsure", "waiting", "flagged", "taken", "fresh"}),
        ({"status": "resolved"}, {"refund"}),
        ({"status": ConversationStatus.pending_human}, {"waiting"}),
        ({"channel": "api"}, {"fresh"}),
        ({"created_from": "2025-03-05"}, {"flagged", "unsure", "taken", "fresh"}),
        # A bare date as the end covers the whole day.
        ({"created_to": "2025-03-05"}, {"refund", "waiting", "flagged"}),
        ({"created_from": date(2025, 3, 6), "created_to": datetime(2025, 3, 8, 12, tzinfo=UTC)}, {"unsure", "taken"}),
        # A time in another zone is compared in UTC: 13:00 at +02:00 is 11:00 UTC, before the 12:00 start.
        ({"created_to": "2025-03-09T13:00:00+02:00"}, {"refund", "unsure", "waiting", "flagged", "taken"}),
        ({"intent": "order_status"}, {"flagged", "taken", "unsure"}),  # the relabel counts, not the prediction
        ({"intent": "smalltalk"}, set()),
        ({"rating": "good"}, {"refund"}),
        ({"rating": "bad"}, {"unsure"}),
        ({"feedback": "down"}, {"unsure"}),
        ({"handed_off": True}, {"waiting", "flagged", "taken"}),
        ({"handed_off": False}, {"refund", "unsure", "fresh"}),
        ({"low_confidence": 0.65}, {"unsure", "taken"}),
        ({"reviewed": True}, {"refund", "unsure"}),
        ({"reviewed": False}, {"waiting", "flagged", "taken", "fresh"}),
        ({"use_for_training": True}, {"refund"}),
        ({"tag": "vip"}, {"fresh"}),
        ({"tag": "Refund"}, {"refund"}),
        ({"search": "LAMP"}, {"refund"}),  # case-insensitive
        ({"search": "refunds take"}, {"refund"}),  # bot replies are searched too
        ({"search": "100%"}, {"unsure"}),  # % and _ are literal, not wildcards
        ({"search": "w_ere"}, set()),
        ({"search": "hello_there"}, {"fresh"}),
        ({"status": "bot", "low_confidence": 0.5, "reviewed": True}, {"unsure"}),
    ],
)
def test_each_filter(shop_session: Session, shop: dict[str, str], conditions: dict, expected: set[str]) -> None:
    assert found(shop_session, shop, **conditions) == expected
    count = crud.count_conversations(session=shop_session, filters=ConversationFilter(**conditions, limit=None))
    assert count == len(expected)


def test_human_needed_first_then_most_recent(shop_session: Session, shop: dict[str, str]) -> None:
    names = {conversation_id: name for name, conversation_id in shop.items()}
    page = crud.list_conversations(session=shop_session, filters=ConversationFilter())
    assert [names[c.id] for c in page] == ["waiting", "flagged", "fresh", "taken", "unsure", "refund"]


def test_pages(shop_session: Session, shop: dict[str, str]) -> None:
    session = shop_session
    everything = crud.list_conversations(session=session, filters=ConversationFilter())
    first = crud.list_conversations(session=session, filters=ConversationFilter(limit=4))
    second = crud.list_conversations(session=session, filters=ConversationFilter(limit=4, offset=4))
    assert [c.id for c in [*first, *second]] == [c.id for c in everything]
    assert len(second) == 2
    assert crud.count_conversations(session=session, filters=ConversationFilter(limit=4, offset=4)) == 2


def test_transcripts_are_read_in_batches_without_gaps(session: Session) -> None:
    # Equal start times: pages continue by id, so none is skipped or repeated at a batch edge.
    same_moment = datetime(2025, 1, 1, tzinfo=UTC)
    made = {make_conversation(session, customer(f"m{i}"), created_at=same_moment)[0].id for i in range(7)}
    read = [
        t.conversation.id
        for t in crud.iter_transcripts(session=session, filters=ConversationFilter(limit=None), batch_size=3)
    ]
    assert sorted(read) == sorted(made) and len(read) == 7
    limited = list(crud.iter_transcripts(session=session, filters=ConversationFilter(limit=5, offset=1), batch_size=2))
    assert [t.conversation.id for t in limited] == read[1:6]
    assert all(len(t.messages) == 1 for t in limited)


@pytest.mark.parametrize(
    ("conditions", "mentions"),
    [
        ({"created_from": "2025-13-45"}, "created_from"),
        ({"created_to": "yesterday"}, "created_to"),
        ({"status": "lost"}, "status"),
        ({"rating": "meh"}, "rating"),
        ({"limit": -1}, "limit"),
        ({"limit": 0}, "limit"),
        ({"offset": -5}, "offset"),
        ({"low_confidence": 1.5}, "low_confidence"),
        ({"created_from": "2025-03-10", "created_to": "2025-03-01"}, "before"),
        ({"colour": "blue"}, "colour"),
        ({"search": ""}, "search"),
    ],
)
def test_bad_filters_are_refused_clearly(conditions: dict, mentions: str) -> None:
    with pytest.raises(InvalidFilter) as refused:
        ConversationFilter(**conditions)
    assert mentions in str(refused.value)
    assert isinstance(refused.value, ValueError)
    with pytest.raises(InvalidFilter):
        ConversationFilter.model_validate(conditions)
