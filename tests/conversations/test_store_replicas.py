"""Work that every app replica sweeps for is done once: an abandoned message gets one apology, an unanswered
ticket moves once, a periodic job runs on one replica per period. Each race runs its callers at the same moment
on connections of their own (on SQLite, as separate processes on one file would), on SQLite and PostgreSQL."""

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TypeVar

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from conversations import crud
from conversations.models import ConversationStatus, Message, Role, utcnow

REASON = "interrupted: the reply was never stored"
T = TypeVar("T")


def race(callers: int, call: Callable[[int], T]) -> list[T]:
    """`call(index)` run by `callers` threads released together, each with its own session and connection."""
    start = threading.Barrier(callers)

    def one(index: int) -> T:
        start.wait()
        return call(index)

    with ThreadPoolExecutor(callers) as pool:
        return [future.result() for future in [pool.submit(one, index) for index in range(callers)]]


def abandoned(engine: Engine, count: int) -> list[tuple[str, int]]:
    """(conversation id, message id) of `count` conversations whose customer message has no reply."""
    made = []
    with Session(engine) as session:
        for index in range(count):
            conversation, _ = crud.create_conversation(session=session)
            message = crud.add_message(
                session=session, conversation_id=conversation.id, role=Role.customer, text=f"hello? #{index}"
            )
            assert message.id is not None
            made.append((conversation.id, message.id))
    return made


def answer(engine: Engine, conversation_id: str, message_id: int) -> Message | None:
    with Session(engine) as session:
        return crud.answer_unanswered(
            session=session, conversation_id=conversation_id, message_id=message_id, text="Sorry!", reason=REASON,
            decision="recovered",
        )  # fmt: skip


def test_two_sweeps_answer_an_abandoned_message_once(engine: Engine) -> None:
    waiting = abandoned(engine, 12)
    for conversation_id, message_id in waiting:
        answers = race(2, lambda _: answer(engine, conversation_id, message_id))  # noqa: B023 - called at once
        assert sum(reply is not None for reply in answers) == 1, answers
    with Session(engine) as session:
        for conversation_id, message_id in waiting:
            messages = crud.list_messages(session=session, conversation_id=conversation_id)
            assert [(m.role, m.decision, m.recovers_message_id) for m in messages] == [
                (Role.customer, None, None),
                (Role.bot, "recovered", message_id),
            ]
            assert messages[1].failed and messages[1].error == REASON
            flagged = crud.get_conversation(session=session, conversation_id=conversation_id)
            assert flagged.needs_attention and flagged.attention_reason == REASON


def test_a_message_answered_meanwhile_gets_no_apology(engine: Engine) -> None:
    [(conversation_id, message_id)] = abandoned(engine, 1)
    with Session(engine) as session:
        crud.add_message(session=session, conversation_id=conversation_id, role=Role.bot, text="Here you go")
    assert answer(engine, conversation_id, message_id) is None
    with Session(engine) as session:
        assert [m.text for m in crud.list_messages(session=session, conversation_id=conversation_id)][-1] == (
            "Here you go"
        )
        assert not crud.get_conversation(session=session, conversation_id=conversation_id).needs_attention


def test_the_store_refuses_a_second_apology_for_one_message(engine: Engine) -> None:
    """The guarantee under the sweep's own check: the unique recovers_message_id."""
    [(conversation_id, message_id)] = abandoned(engine, 1)
    assert answer(engine, conversation_id, message_id) is not None
    with Session(engine) as session, pytest.raises(IntegrityError):
        crud.add_message(
            session=session, conversation_id=conversation_id, role=Role.bot, text="Sorry again",
            recovers_message_id=message_id,
        )  # fmt: skip


def test_two_sweeps_move_an_unanswered_ticket_once(engine: Engine) -> None:
    long_ago = utcnow() - timedelta(hours=1)
    with Session(engine) as session:
        staff = [
            crud.create_staff(session=session, email=f"{name}@example.com", display_name=name, password_hash="x")
            for name in ("ada", "bea", "cy")
        ]
        ada, bea, cy = (account.id for account in staff)
        assert ada is not None and bea is not None and cy is not None
        tickets = []
        for _ in range(8):
            conversation, _ = crud.create_conversation(session=session)
            crud.save_dialogue_state(
                session=session, conversation_id=conversation.id, status=ConversationStatus.pending_human, slots={},
                misses=0, negative_streak=0, pending_intent=None,
            )  # fmt: skip
            crud.open_ticket(session=session, conversation_id=conversation.id, reason="handoff")
            crud.assign_ticket(session=session, conversation_id=conversation.id, assignee_id=ada, team=None,
                               now=long_ago)  # fmt: skip
            tickets.append(conversation.id)
    cutoff = utcnow() - timedelta(minutes=10)

    def move(conversation_id: str, to: int) -> str | None:
        with Session(engine) as session:
            moved = crud.reassign_ticket(
                session=session, conversation_id=conversation_id, previous_id=ada, assignee_id=to,
                assigned_before=cutoff,
            )  # fmt: skip
            return moved.conversation_id if moved is not None else None

    for conversation_id in tickets:
        # Each replica picked its own next teammate; only one of them gets the ticket.
        outcomes = race(2, lambda index: move(conversation_id, [bea, cy][index]))  # noqa: B023 - called at once
        assert sum(outcome is not None for outcome in outcomes) == 1, outcomes
    with Session(engine) as session:
        for conversation_id in tickets:
            ticket = crud.get_ticket(session=session, conversation_id=conversation_id)
            assert ticket is not None and ticket.assignee_id in (bea, cy)
    # Moved once, the ticket is no longer as the sweep found it: a late replica's move does nothing.
    assert move(tickets[0], cy) is None


def test_a_periodic_job_is_claimed_by_one_replica_per_period(engine: Engine) -> None:
    every = timedelta(hours=6)
    now = utcnow()

    def claim(holder: str, at=now) -> bool:
        with Session(engine) as session:
            return crud.claim_job(session=session, name="retention", every=every, holder=holder, now=at)

    # Four replicas start together on a database that never ran it: one runs it.
    assert sorted(race(4, lambda index: claim(f"pod-{index}:1"))) == [False, False, False, True]
    with Session(engine) as session:
        claimed_at = crud.job_claimed_at(session=session, name="retention")
    assert claimed_at is not None
    assert not claim("pod-9:1", now + every - timedelta(minutes=1)), "not due again before the period ends"
    later = now + every + timedelta(seconds=1)
    assert sorted(race(3, lambda index: claim(f"pod-{index}:1", later))) == [False, False, True]
