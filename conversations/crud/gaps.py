"""Questions the bot could not answer (content gaps) that a teammate then answered in the same conversation: training
material for the answer selection, and help snippets an admin approves on the console's Knowledge page."""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from conversations.crud.errors import GapDecided, GapNotFound
from conversations.models import GapDecision, Message, Role
from conversations.pii import mask_pii
from conversations.reports import unanswered_reply

# Conversations read from the store at a time while looking for answered gaps.
_BATCH = 200


@dataclass(frozen=True)
class AnsweredGap:
    """A customer question the bot could not answer and the first teammate reply after it, as written (not masked)."""

    conversation_id: str
    question_id: int
    question: str
    answer_id: int
    answer: str
    answered_at: datetime
    author: str | None
    thread: tuple[Message, ...]  # the conversation up to and including the teammate's answer


def _in_thread(thread: Sequence[Message]) -> Iterator[AnsweredGap]:
    """The answered gaps of one conversation, oldest first. A teammate's reply answers the last unanswered question
    before it (the customer may have written more meanwhile, "talk to a person" most often)."""
    question: Message | None = None
    for position, message in enumerate(thread):
        if message.role == Role.customer:
            reply = thread[position + 1] if position + 1 < len(thread) else None
            if reply is not None and reply.role == Role.bot and unanswered_reply(reply):
                question = message
        elif message.role == Role.staff and question is not None and message.text.strip():
            assert question.id is not None and message.id is not None
            yield AnsweredGap(
                conversation_id=message.conversation_id, question_id=question.id, question=question.text,
                answer_id=message.id, answer=message.text, answered_at=message.created_at, author=message.author,
                thread=tuple(thread[: position + 1]),
            )  # fmt: skip
            question = None


def _answered(session: Session, *, since: datetime | None, undecided: bool) -> Iterator[AnsweredGap]:
    """Answered gaps, conversations with the newest teammate reply first; only conversations a teammate wrote in
    (since `since`) are read."""
    replies = select(Message.id).where(Message.role == Role.staff)
    if since is not None:
        replies = replies.where(col(Message.created_at) >= since)
    latest = select(Message.conversation_id).where(col(Message.id).in_(replies))
    ranked = latest.group_by(col(Message.conversation_id)).order_by(func.max(Message.id).desc())
    offset = 0
    while ids := list(session.exec(ranked.offset(offset).limit(_BATCH)).all()):
        offset += _BATCH
        threads: dict[str, list[Message]] = {conversation_id: [] for conversation_id in ids}
        for message in session.exec(
            select(Message).where(col(Message.conversation_id).in_(ids)).order_by(col(Message.id))
        ):
            threads[message.conversation_id].append(message)
        in_range = set(session.exec(replies.where(col(Message.conversation_id).in_(ids))))
        decided = set()
        if undecided:
            decided = set(session.exec(select(GapDecision.message_id).where(col(GapDecision.conversation_id).in_(ids))))
        for conversation_id in ids:
            for gap in reversed(list(_in_thread(threads[conversation_id]))):
                if gap.answer_id in in_range and gap.question_id not in decided:
                    yield gap


def training_messages(gap: AnsweredGap) -> list[dict[str, str]]:
    """The gap's conversation as chat messages, personal data masked as in the training dataset: customer turns as
    "user" (those written in a row joined), the bot's earlier answers and the teammate's answer as "assistant". The
    bot's replies from the question on (not sure, a handoff) are left out: the teammate's answer replaces them."""
    messages: list[dict[str, str]] = []
    asked = False
    for message in gap.thread:
        asked = asked or message.id == gap.question_id
        if message.role == Role.bot and (asked or message.failed or unanswered_reply(message)):
            continue
        role = "user" if message.role == Role.customer else "assistant"
        content = mask_pii(message.text.strip())
        if messages and messages[-1]["role"] == role == "user":
            messages[-1]["content"] += "\n" + content
        else:
            messages.append({"role": role, "content": content})
    return messages


def answered_gaps(*, session: Session, since: datetime | None = None, limit: int = 500) -> list[list[dict[str, str]]]:
    """Up to `limit` answered gaps (teammate's answer since `since`, newest first), each as the chat messages that
    lead to the teammate's answer and end with it, masked (training_messages)."""
    found = []
    for gap in _answered(session, since=since, undecided=False):
        if len(found) >= limit:
            break
        found.append(training_messages(gap))
    return found


def pending_gaps(*, session: Session, limit: int = 50) -> list[AnsweredGap]:
    """Up to `limit` answered gaps no admin has made a snippet of or dismissed, newest first."""
    found = []
    for gap in _answered(session, since=None, undecided=True):
        if len(found) >= limit:
            break
        found.append(gap)
    return found


def get_answered_gap(*, session: Session, question_id: int) -> AnsweredGap:
    """The answered gap of this customer question; GapNotFound when it is none, GapDecided when an admin has
    already decided about it."""
    question = session.get(Message, question_id)
    if question is None or question.role != Role.customer:
        raise GapNotFound(question_id)
    if session.exec(select(GapDecision).where(GapDecision.message_id == question_id)).first() is not None:
        raise GapDecided(question_id)
    thread = session.exec(
        select(Message).where(Message.conversation_id == question.conversation_id).order_by(col(Message.id))
    ).all()
    for gap in _in_thread(thread):
        if gap.question_id == question_id:
            return gap
    raise GapNotFound(question_id)


def decide_gap(
    *, session: Session, gap: AnsweredGap, article_slug: str | None, staff_id: int | None = None
) -> GapDecision:
    """Record that an admin made the snippet `article_slug` of this gap, or (None) dismissed it; it leaves the
    pending list. GapDecided when someone decided first."""
    decision = GapDecision(
        message_id=gap.question_id, conversation_id=gap.conversation_id, article_slug=article_slug, staff_id=staff_id
    )
    session.add(decision)
    try:
        session.commit()
    except IntegrityError as taken:
        session.rollback()
        raise GapDecided(gap.question_id) from taken
    session.refresh(decision)
    return decision
