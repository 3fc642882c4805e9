"""Retention: conversations with no activity for longer than the configured period are anonymised or deleted.

The app runs it at start and every `retention_every_hours`; `supportbot store retention` runs it now,
with the settings' period and mode or others given on the command line. Anonymising masks personal data
in everything stored and voids the customer token. Derived copies go with the conversations: built training
datasets that hold an expired conversation are deleted (the next run rebuilds them), and the evaluation
samples quoted in reports of runs older than the period are dropped. Backup archives are point-in-time
copies outside the store: `supportbot backup` deletes its archives older than `backup_keep_days`, which the
settings keep shorter than the retention period.
"""

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from sqlmodel import Session, col, select

from conversations import crud
from conversations.models import Conversation, TrainingRun
from conversations.pii import mask_pii, mask_pii_in

logger = logging.getLogger(__name__)

RetentionMode = Literal["anonymise", "delete"]
# Stands in for the token hash of an anonymised conversation. A real hash is 64 hex digits, so no token
# opens it, and the next run knows the conversation is already done.
ANONYMISED_TOKEN_HASH = "anonymised"


class InvalidRetention(ValueError):
    """A retention period or mode that cannot be applied."""


@dataclass
class RetentionResult:
    """What one retention run changed."""

    mode: RetentionMode
    cutoff: datetime
    conversations: int = 0
    # Messages deleted, or messages whose text had personal data masked.
    messages: int = 0
    # Built training datasets deleted because they held an expired conversation.
    datasets: int = 0
    # Retraining reports whose quoted evaluation samples were dropped.
    reports: int = 0


def apply_retention(
    *,
    session: Session,
    now: datetime | None = None,
    keep_days: int,
    mode: RetentionMode = "anonymise",
    batch_size: int = 500,
    datasets_dir: Path | None = None,
) -> RetentionResult:
    """Anonymise or delete every conversation with no activity in the last `keep_days` days before `now`,
    and the derived copies of them: datasets in `datasets_dir`, samples in old retraining reports."""
    if keep_days < 1:
        raise InvalidRetention(f"keep_days must be at least 1, got {keep_days}")
    if mode not in ("anonymise", "delete"):
        raise InvalidRetention(f"mode must be 'anonymise' or 'delete', got {mode!r}")
    now = now or datetime.now(UTC)
    cutoff = (now if now.tzinfo else now.replace(tzinfo=UTC)) - timedelta(days=keep_days)
    result = RetentionResult(mode=mode, cutoff=cutoff)
    expired: set[str] = set()
    while True:
        batch = crud.conversations_inactive_since(
            session=session,
            cutoff=cutoff,
            skip_token_hash=ANONYMISED_TOKEN_HASH if mode == "anonymise" else None,
            limit=batch_size,
        )
        if not batch:
            break
        expired.update(conversation.id for conversation in batch)
        if mode == "delete":
            conversations, messages = crud.delete_conversations(
                session=session, conversation_ids=[conversation.id for conversation in batch]
            )
        else:
            conversations, messages = len(batch), _anonymise(session, batch)
        # One transaction per batch: an interrupted run keeps what it finished and resumes from there.
        session.commit()
        result.conversations += conversations
        result.messages += messages
    if datasets_dir is not None and expired:
        result.datasets = prune_datasets(datasets_dir, expired)
    result.reports = _drop_report_samples(session, cutoff)
    logger.info(
        "retention (%s, older than %s): %d conversations, %d messages",
        mode,
        cutoff.date(),
        result.conversations,
        result.messages,
    )
    return result


def prune_datasets(datasets_dir: Path, conversation_ids: set[str]) -> int:
    """Delete every built dataset (a folder with dataset.jsonl) holding one of `conversation_ids`."""
    pruned = 0
    for dataset in sorted(datasets_dir.glob("*/dataset.jsonl")) if datasets_dir.is_dir() else []:
        with dataset.open() as lines:
            holds = any(json.loads(line).get("id") in conversation_ids for line in lines if line.strip())
        if holds:
            shutil.rmtree(dataset.parent)
            pruned += 1
    return pruned


def _drop_report_samples(session: Session, cutoff: datetime) -> int:
    """Empty the evaluation samples (customer questions and replies) quoted in reports of runs older than `cutoff`."""
    dropped = 0
    for run in session.exec(select(TrainingRun).where(col(TrainingRun.created_at) < cutoff)).all():
        report = run.report or {}
        sides = [side for side in (report.get("candidate"), report.get("in_service")) if side and side.get("samples")]
        if sides:
            run.report = {
                **report,
                **{name: {**report[name], "samples": []} for name in ("candidate", "in_service") if report.get(name)},
            }
            session.add(run)
            dropped += 1
    session.commit()
    return dropped


def _anonymise(session: Session, batch: Sequence[Conversation]) -> int:
    changed_messages = 0
    for transcript in crud.load_transcripts(session=session, conversations=batch):
        conversation = transcript.conversation
        conversation.token_hash = ANONYMISED_TOKEN_HASH
        conversation.summary = mask_pii(conversation.summary)
        conversation.slots = mask_pii_in(conversation.slots)  # type: ignore[assignment]
        conversation.verified_user_id = conversation.verified_email = conversation.pending_action = None
        if conversation.attention_reason:
            conversation.attention_reason = mask_pii(conversation.attention_reason)
        session.add(conversation)
        for message in transcript.messages:
            masked = mask_pii(message.text)
            if masked != message.text:
                changed_messages += 1
                message.text = masked
            if message.trace:
                message.trace = mask_pii_in(message.trace)  # type: ignore[assignment]
            if message.error:
                message.error = mask_pii(message.error)
            session.add(message)
        for review in transcript.reviews.values():
            if review.corrected_text:
                review.corrected_text = mask_pii(review.corrected_text)
                session.add(review)
        if transcript.csat is not None and transcript.csat.comment:
            transcript.csat.comment = mask_pii(transcript.csat.comment)
            session.add(transcript.csat)
    return changed_messages
