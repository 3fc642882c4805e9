"""A customer's data rights: find everything stored about them by e-mail address, export it as JSON, or erase it
everywhere (conversations and every row that points at them, built training datasets, the samples quoted in
retraining reports, shared rate counts, and conversation ids in the audit log).

Reports are computed from the store, so they drop an erased customer at once. Backup archives are copies outside
the store: restore one only together with erasing again the addresses erased since (deploy/README.md).
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import String, cast, delete, func
from sqlmodel import Session, col, or_, select

from conversations import crud
from conversations.models import (
    AlertDelivery,
    AuditLog,
    Conversation,
    CsatRating,
    DeskTicket,
    Message,
    Note,
    RateCount,
    Review,
    TrainingRun,
)
from conversations.retention import prune_datasets

ERASED = "conversation:erased"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class InvalidEmail(ValueError):
    """Not an e-mail address to search for."""


def _address(email: str) -> str:
    email = email.strip().lower()
    if not _EMAIL.match(email) or len(email) > 254:
        raise InvalidEmail(f"{email!r} is not an e-mail address")
    return email


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def find_customer(*, session: Session, email: str) -> list[Conversation]:
    """Every conversation that holds this address: as a detail the customer gave, in any message, note, review or
    rating comment, or as the address staff answers are e-mailed to. Oldest first."""
    pattern = _like(_address(email))
    ids: set[str] = set()
    queries = [
        select(Conversation.id).where(func.lower(cast(Conversation.slots, String)).like(pattern, escape="\\")),
        select(Message.conversation_id).where(func.lower(Message.text).like(pattern, escape="\\")),
        select(Note.conversation_id).where(func.lower(Note.text).like(pattern, escape="\\")),
        select(Review.conversation_id).where(func.lower(Review.corrected_text).like(pattern, escape="\\")),
        select(CsatRating.conversation_id).where(func.lower(CsatRating.comment).like(pattern, escape="\\")),
        select(DeskTicket.conversation_id).where(func.lower(DeskTicket.customer_email) == _address(email)),
    ]
    for query in queries:
        ids.update(session.exec(query).all())
    if not ids:
        return []
    statement = select(Conversation).where(col(Conversation.id).in_(ids)).order_by(col(Conversation.created_at))
    return list(session.exec(statement).all())


def _row(value: object) -> dict:
    data = value.model_dump(mode="json")  # type: ignore[attr-defined]
    data.pop("token_hash", None)
    return data


def export_customer(*, session: Session, email: str) -> dict:
    """Everything stored about the customer, as one JSON-ready document."""
    conversations = find_customer(session=session, email=email)
    exported = []
    for transcript in crud.load_transcripts(session=session, conversations=conversations):
        cid = transcript.conversation.id
        ticket = crud.get_ticket(session=session, conversation_id=cid)
        exported.append({
            "conversation": _row(transcript.conversation),
            "messages": [_row(message) for message in transcript.messages],
            "ratings": [_row(item) for item in transcript.feedback.values()],
            "satisfaction": _row(transcript.csat) if transcript.csat else None,
            "reviews": [_row(item) for item in transcript.reviews.values()],
            "tags": transcript.tags,
            "support_ticket": _row(ticket) if ticket else None,
            "internal_notes": [_row(note) for note in crud.list_notes(session=session, conversation_id=cid)],
            "alerts_sent": [
                _row(delivery)
                for delivery in session.exec(select(AlertDelivery).where(AlertDelivery.conversation_id == cid))
            ],
        })  # fmt: skip
    return {"email": _address(email), "conversations": exported}


@dataclass
class Erasure:
    """What erasing one customer removed."""

    conversations: int = 0
    messages: int = 0
    datasets: int = 0
    reports: int = 0
    rate_counts: int = 0
    audit_entries: int = 0


def erase_customer(*, session: Session, email: str, datasets_dir: Path | None = None) -> Erasure:
    """Remove every trace of the customer from the store and the datasets built from it; commits."""
    address = _address(email)
    conversations = find_customer(session=session, email=address)
    ids = [conversation.id for conversation in conversations]
    if not ids:
        return Erasure()
    said = [
        m.text for m in session.exec(select(Message).where(col(Message.conversation_id).in_(ids))) if len(m.text) >= 12
    ]
    result = Erasure()
    result.conversations, result.messages = crud.delete_conversations(session=session, conversation_ids=ids)
    # Rate-limit keys name the conversation ("send:conversation:<id>").
    keyed = or_(*[col(RateCount.key).like(_like(cid), escape="\\") for cid in ids])
    result.rate_counts = session.exec(delete(RateCount).where(keyed)).rowcount  # type: ignore[call-overload]
    targets = [f"conversation:{cid}" for cid in ids]
    for entry in session.exec(select(AuditLog).where(col(AuditLog.target).in_(targets))).all():
        entry.target = ERASED
        session.add(entry)
        result.audit_entries += 1
    for run in session.exec(select(TrainingRun)).all():
        quoted = json.dumps([run.report, run.card]).lower()
        if address in quoted or any(json.dumps(text).strip('"').lower() in quoted for text in said):
            run.report = _without_samples(run.report)
            run.card = _without_samples(run.card)
            session.add(run)
            result.reports += 1
    session.commit()
    if datasets_dir is not None:
        result.datasets = prune_datasets(datasets_dir, set(ids))
    return result


def _without_samples(document: dict | None) -> dict | None:
    """The report or card with every list of quoted samples emptied (its scores and counts stay)."""
    if not isinstance(document, dict):
        return document
    return {
        key: [] if key == "samples" else _without_samples(value) if isinstance(value, dict) else value
        for key, value in document.items()
    }
