"""How the bot and the desk do over a date range, read from the store as it is now: conversations per day, the
share resolved without a human, handoffs by reason, satisfaction and thumbs, first-response times, top intents,
and the questions the bot could not answer (content gaps).

Nothing is copied into a report table: an erased or expired conversation leaves every report at once.
"""

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from sqlmodel import Session, col, select

from conversations.models import (
    Conversation,
    ConversationStatus,
    CsatRating,
    DeskTicket,
    Feedback,
    IntentRelabel,
    Message,
    Role,
)
from conversations.pii import mask_pii

# A bot reply that did not answer: the customer was asked to rephrase, or told the help content has no answer.
NOT_ANSWERED = "not covered by the help content"
MAX_RANGE_DAYS = 366
TOP = 10


class InvalidRange(ValueError):
    """A report range that is reversed or too long."""


@dataclass
class Day:
    """One day of the report (UTC)."""

    day: date
    conversations: int = 0
    handed_off: int = 0
    resolved_by_bot: int = 0
    csat_scores: list[int] = field(default_factory=list)
    thumbs_up: int = 0
    thumbs_down: int = 0
    first_response_s: list[float] = field(default_factory=list)

    @property
    def csat_average(self) -> float | None:
        return round(statistics.fmean(self.csat_scores), 2) if self.csat_scores else None

    @property
    def first_response_median_s(self) -> float | None:
        return round(statistics.median(self.first_response_s), 1) if self.first_response_s else None


@dataclass
class Gap:
    """A question the bot could not answer (personal data masked: the report is shared and downloaded), how often
    it was asked in the range, and when last."""

    question: str
    count: int
    last_asked: datetime
    conversation_id: str


@dataclass
class Report:
    since: date
    until: date  # inclusive
    days: list[Day]
    handoff_reasons: list[tuple[str, int]]
    top_intents: list[tuple[str, int]]
    gaps: list[Gap]

    @property
    def conversations(self) -> int:
        return sum(day.conversations for day in self.days)

    @property
    def resolved_by_bot_share(self) -> float | None:
        return (
            round(sum(day.resolved_by_bot for day in self.days) / self.conversations, 4) if self.conversations else None
        )

    @property
    def first_response_median_s(self) -> float | None:
        times = [seconds for day in self.days for seconds in day.first_response_s]
        return round(statistics.median(times), 1) if times else None

    @property
    def csat_average(self) -> float | None:
        scores = [score for day in self.days for score in day.csat_scores]
        return round(statistics.fmean(scores), 2) if scores else None


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _reason(message: Message) -> str:
    reason = (message.trace or {}).get("reason") or "unknown"
    # "action order_status failed: unavailable" and the like keep their cause; free text is cut short.
    return str(reason)[:80]


def build_report(*, session: Session, since: date, until: date) -> Report:
    """The report for conversations started from `since` to `until` (both whole UTC days)."""
    if until < since:
        raise InvalidRange("the report's end is before its start")
    if (until - since).days >= MAX_RANGE_DAYS:
        raise InvalidRange(f"a report covers at most {MAX_RANGE_DAYS} days")
    start = datetime.combine(since, time(), UTC)
    end = datetime.combine(until + timedelta(days=1), time(), UTC)
    days = {
        since + timedelta(days=offset): Day(since + timedelta(days=offset))
        for offset in range((until - since).days + 1)
    }
    in_range = (col(Conversation.created_at) >= start, col(Conversation.created_at) < end)
    conversations = {c.id: c for c in session.exec(select(Conversation).where(*in_range)).all()}
    ids = list(conversations)

    def day_of(conversation_id: str) -> Day:
        return days[_utc(conversations[conversation_id].created_at).date()]

    messages: dict[str, list[Message]] = defaultdict(list)
    if ids:
        for message in session.exec(
            select(Message)
            .where(col(Message.conversation_id).in_(ids))
            .order_by(col(Message.conversation_id), col(Message.id))
        ).all():
            messages[message.conversation_id].append(message)
    tickets = {
        t.conversation_id: t for t in session.exec(select(DeskTicket).where(col(DeskTicket.conversation_id).in_(ids)))
    }
    relabels = {
        r.message_id: r.new_intent
        for r in session.exec(select(IntentRelabel).where(col(IntentRelabel.conversation_id).in_(ids)))
    }

    reasons: Counter[str] = Counter()
    intents: Counter[str] = Counter()
    gaps: dict[str, Gap] = {}
    for conversation_id, conversation in conversations.items():
        day = day_of(conversation_id)
        day.conversations += 1
        thread = messages.get(conversation_id, [])
        handoffs = [m for m in thread if m.role == Role.bot and m.decision == "handoff"]
        people = (
            bool(handoffs) or conversation_id in tickets or any(m.role == Role.staff for m in thread)
            or conversation.status in (ConversationStatus.pending_human, ConversationStatus.human)
        )  # fmt: skip
        if people:
            day.handed_off += 1
        elif not conversation.needs_attention and any(m.role == Role.bot and not m.failed for m in thread):
            day.resolved_by_bot += 1
        reasons.update(_reason(message) for message in handoffs)
        for position, message in enumerate(thread):
            if message.role == Role.customer:
                intent = relabels.get(message.id or 0) or message.intent
                if intent:
                    intents[intent] += 1
                reply = thread[position + 1] if position + 1 < len(thread) else None
                if reply is not None and reply.role == Role.bot and unanswered_reply(reply):
                    question = mask_pii(message.text)
                    key = " ".join(question.lower().split())[:200]
                    found = gaps.get(key)
                    asked = _utc(message.created_at)
                    if found is None:
                        gaps[key] = Gap(question[:300], 1, asked, conversation_id)
                    else:
                        found.count += 1
                        if asked > found.last_asked:
                            found.last_asked, found.conversation_id = asked, conversation_id
        ticket = tickets.get(conversation_id)
        if ticket is not None and ticket.first_response_at is not None:
            day.first_response_s.append((_utc(ticket.first_response_at) - _utc(ticket.waiting_since)).total_seconds())
    if ids:
        for csat in session.exec(select(CsatRating).where(col(CsatRating.conversation_id).in_(ids))):
            day_of(csat.conversation_id).csat_scores.append(csat.score)
        for feedback in session.exec(select(Feedback).where(col(Feedback.conversation_id).in_(ids))):
            day = day_of(feedback.conversation_id)
            if feedback.rating == "up":
                day.thumbs_up += 1
            else:
                day.thumbs_down += 1
    ranked_gaps = sorted(gaps.values(), key=lambda gap: (-gap.count, -gap.last_asked.timestamp()))
    return Report(
        since=since, until=until, days=list(days.values()), handoff_reasons=reasons.most_common(),
        top_intents=intents.most_common(TOP), gaps=ranked_gaps[: TOP * 2],
    )  # fmt: skip


def unanswered_reply(reply: Message) -> bool:
    """Whether a bot reply left the customer's question unanswered: a content gap."""
    if reply.decision == "rephrase":
        return True
    check = (reply.trace or {}).get("check") or {}
    return check.get("verdict") == NOT_ANSWERED
