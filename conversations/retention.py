"""Retention: conversations with no activity for longer than the configured period are anonymised or deleted.

The app runs it at start and every `retention_every_hours`; `supportbot store retention` runs it now,
with the settings' period and mode or others given on the command line. Anonymising masks personal data
in everything stored and voids the customer token.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlmodel import Session

from conversations import crud
from conversations.models import Conversation
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


def apply_retention(
    *,
    session: Session,
    now: datetime | None = None,
    keep_days: int,
    mode: RetentionMode = "anonymise",
    batch_size: int = 500,
) -> RetentionResult:
    """Anonymise or delete every conversation with no activity in the last `keep_days` days before `now`."""
    if keep_days < 1:
        raise InvalidRetention(f"keep_days must be at least 1, got {keep_days}")
    if mode not in ("anonymise", "delete"):
        raise InvalidRetention(f"mode must be 'anonymise' or 'delete', got {mode!r}")
    now = now or datetime.now(UTC)
    cutoff = (now if now.tzinfo else now.replace(tzinfo=UTC)) - timedelta(days=keep_days)
    result = RetentionResult(mode=mode, cutoff=cutoff)
    while True:
        batch = crud.conversations_inactive_since(
            session=session,
            cutoff=cutoff,
            skip_token_hash=ANONYMISED_TOKEN_HASH if mode == "anonymise" else None,
            limit=batch_size,
        )
        if not batch:
            break
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
    logger.info(
        "retention (%s, older than %s): %d conversations, %d messages",
        mode,
        cutoff.date(),
        result.conversations,
        result.messages,
    )
    return result


def _anonymise(session: Session, batch: Sequence[Conversation]) -> int:
    changed_messages = 0
    for transcript in crud.load_transcripts(session=session, conversations=batch):
        conversation = transcript.conversation
        conversation.token_hash = ANONYMISED_TOKEN_HASH
        conversation.summary = mask_pii(conversation.summary)
        conversation.slots = mask_pii_in(conversation.slots)  # type: ignore[assignment]
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
