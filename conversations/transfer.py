"""Transcripts in and out of the store: JSONL in OpenAI chat format with metadata, or CSV, and JSONL import.

Exports stream conversation by conversation and mask personal data unless told not to; a company
brings its history in the same JSONL. One JSONL line:

    {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}],
     "metadata": {"conversation_id", "channel", "status", "created_at", "updated_at", "csat": {"score",
                  "comment"} | null, "tags": [...], "reviewed", "use_for_training",
                  "reviews":  per assistant turn, {"rating": "good"|"bad", "corrected_text"} | null,
                  "feedback": per assistant turn, the customer's "up" | "down" | null,
                  "authors":  per assistant turn, null for the bot, {"role": "staff", "name"} for staff,
                  "intents":  per user turn, {"intent", "predicted", "confidence"} | null,
                  "times":    per message, when it was written (ISO 8601)}}
"""

import csv
import io
import json
import secrets
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlmodel import Session

from conversations import crud
from conversations.filters import ConversationFilter
from conversations.models import (
    Conversation,
    ConversationReview,
    ConversationStatus,
    CsatRating,
    Feedback,
    IntentRelabel,
    Message,
    Rating,
    Review,
    ReviewRating,
    Role,
)
from conversations.pii import mask_pii

# Beyond this many output rows an export is refused: narrow the filter or raise the bound knowingly.
MAX_EXPORT_ROWS = 100_000
MAX_IMPORT_CONVERSATIONS = 100_000
# Conversations stored per transaction by an import (well under a second of SQLite's write lock each), and
# the pause after each: longer than SQLite's busy handler sleeps between tries, so waiting writers get in.
IMPORT_BATCH = 200
IMPORT_PAUSE_S = 0.15
# How many line errors an import reports before summarising the rest.
MAX_REPORTED_ERRORS = 20

CSV_COLUMNS = [
    "conversation_id",
    "channel",
    "status",
    "conversation_created_at",
    "csat_score",
    "csat_comment",
    "tags",
    "reviewed",
    "use_for_training",
    "message_id",
    "created_at",
    "role",
    "source",
    "author",
    "content",
    "intent",
    "predicted_intent",
    "confidence",
    "decision",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "first_token_ms",
    "latency_ms",
    "review_rating",
    "corrected_text",
    "feedback",
]


class ExportTooLarge(Exception):
    """The filter matches more rows than an export may hold."""


class ImportFailed(ValueError):
    """An import file with invalid lines; nothing of it was stored. `errors` names each line's problem."""

    def __init__(self, errors: list[str]) -> None:
        shown = errors[:MAX_REPORTED_ERRORS]
        more = len(errors) - len(shown)
        summary = "\n".join(shown) + (f"\n... and {more} more" if more else "")
        super().__init__(f"import refused, nothing was stored:\n{summary}")
        self.errors = errors


def _iso(moment: datetime) -> str:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


def _text(text: str | None, mask: bool) -> str | None:
    return mask_pii(text) if mask and text else text


def transcript_record(transcript: crud.Transcript, *, mask: bool = True) -> dict[str, Any]:
    """One conversation as a JSONL record (see the module docstring)."""
    conversation = transcript.conversation
    messages, reviews, feedback, authors, intents, times = [], [], [], [], [], []
    for message in transcript.messages:
        times.append(_iso(message.created_at))
        content = _text(message.text, mask) or ""
        if message.role == Role.customer:
            messages.append({"role": "user", "content": content})
            relabel = transcript.relabels.get(message.id)  # type: ignore[arg-type]
            predicted = message.intent
            intent = relabel.new_intent if relabel else predicted
            intents.append(
                {"intent": intent, "predicted": predicted, "confidence": message.confidence}
                if intent is not None or message.confidence is not None
                else None
            )
            continue
        messages.append({"role": "assistant", "content": content})
        review = transcript.reviews.get(message.id)  # type: ignore[arg-type]
        reviews.append(
            {"rating": review.rating.value, "corrected_text": _text(review.corrected_text, mask)} if review else None
        )
        rating = transcript.feedback.get(message.id)  # type: ignore[arg-type]
        feedback.append(rating.rating.value if rating else None)
        authors.append({"role": "staff", "name": message.author} if message.role == Role.staff else None)
    csat = transcript.csat
    mark = transcript.mark
    return {
        "messages": messages,
        "metadata": {
            "conversation_id": conversation.id,
            "channel": conversation.channel,
            "status": conversation.status.value,
            "created_at": _iso(conversation.created_at),
            "updated_at": _iso(conversation.updated_at),
            "csat": {"score": csat.score, "comment": _text(csat.comment, mask)} if csat else None,
            "tags": list(transcript.tags),
            "reviewed": bool(mark and mark.reviewed),
            "use_for_training": bool(mark and mark.use_for_training),
            "reviews": reviews,
            "feedback": feedback,
            "authors": authors,
            "intents": intents,
            "times": times,
        },
    }


def _check_size(rows: int, max_rows: int, what: str) -> None:
    if rows > max_rows:
        raise ExportTooLarge(
            f"the filter matches {rows} {what}, more than the export limit of {max_rows}; "
            "narrow the filter (dates, status, tag) or raise the limit"
        )


def export_jsonl(
    *, session: Session, filters: ConversationFilter, mask: bool = True, max_rows: int = MAX_EXPORT_ROWS
) -> Iterator[str]:
    """JSONL lines (with their newline), one per matching conversation, oldest first.

    The size is checked before anything is produced; then conversations are read in batches, so an
    export of any size holds only one batch in memory.
    """
    _check_size(crud.count_conversations(session=session, filters=filters), max_rows, "conversations")

    def lines() -> Iterator[str]:
        for transcript in crud.iter_transcripts(session=session, filters=filters):
            yield json.dumps(transcript_record(transcript, mask=mask), ensure_ascii=False) + "\n"

    return lines()


def csv_cell(value: object) -> object:
    """`value` safe to open in a spreadsheet: text starting with = + - @, a tab or a carriage return would run as a
    formula there (OWASP's CSV injection), so it gets a leading apostrophe, which keeps it text."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def export_csv(
    *, session: Session, filters: ConversationFilter, mask: bool = True, max_rows: int = MAX_EXPORT_ROWS
) -> Iterator[str]:
    """CSV text, a header and then one row per message of each matching conversation, streamed."""
    _check_size(crud.count_filtered_messages(session=session, filters=filters), max_rows, "messages")

    def rows() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)

        def emit(row: Sequence[object]) -> str:
            buffer.seek(0)
            buffer.truncate()
            writer.writerow([csv_cell(value) for value in row])
            return buffer.getvalue()

        yield emit(CSV_COLUMNS)
        for transcript in crud.iter_transcripts(session=session, filters=filters):
            conversation, csat, mark = transcript.conversation, transcript.csat, transcript.mark
            shared = [
                conversation.id,
                conversation.channel,
                conversation.status.value,
                _iso(conversation.created_at),
                csat.score if csat else "",
                _text(csat.comment, mask) if csat else "",
                ";".join(transcript.tags),
                bool(mark and mark.reviewed),
                bool(mark and mark.use_for_training),
            ]
            for message in transcript.messages:
                review = transcript.reviews.get(message.id)  # type: ignore[arg-type]
                relabel = transcript.relabels.get(message.id)  # type: ignore[arg-type]
                rating = transcript.feedback.get(message.id)  # type: ignore[arg-type]
                is_user = message.role == Role.customer
                yield emit(
                    [
                        *shared,
                        message.id,
                        _iso(message.created_at),
                        "user" if is_user else "assistant",
                        message.role.value,
                        message.author or "",
                        _text(message.text, mask),
                        ((relabel.new_intent if relabel else message.intent) or "") if is_user else "",
                        (message.intent or "") if is_user else "",
                        "" if message.confidence is None else message.confidence,
                        message.decision or "",
                        message.model or "",
                        "" if message.prompt_tokens is None else message.prompt_tokens,
                        "" if message.completion_tokens is None else message.completion_tokens,
                        "" if message.first_token_ms is None else message.first_token_ms,
                        "" if message.latency_ms is None else message.latency_ms,
                        review.rating.value if review else "",
                        (_text(review.corrected_text, mask) or "") if review else "",
                        rating.rating.value if rating else "",
                    ]
                )

    return rows()


# --- Import: each line is validated against these shapes before anything is stored. ---


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _ImportMessage(_Strict):
    role: Literal["user", "assistant", "system"]
    content: str = Field(max_length=100_000)


class _ImportReview(_Strict):
    rating: ReviewRating
    corrected_text: str | None = Field(default=None, max_length=4000)


class _ImportIntent(_Strict):
    intent: str | None = Field(default=None, min_length=1, max_length=64)
    predicted: str | None = Field(default=None, min_length=1, max_length=64)
    confidence: float | None = Field(default=None, ge=0, le=1)


class _ImportAuthor(_Strict):
    role: Literal["staff"] = "staff"
    name: str | None = Field(default=None, max_length=120)


class _ImportCsat(_Strict):
    score: int = Field(ge=1, le=5)
    comment: str | None = Field(default=None, max_length=1000)


class _ImportMetadata(BaseModel):
    # Other keys (the source's ids, channel, status) are accepted and ignored.
    model_config = ConfigDict(extra="ignore")

    created_at: datetime | None = None
    csat: _ImportCsat | None = None
    tags: list[str] = Field(default_factory=list, max_length=50)
    reviewed: bool = False
    use_for_training: bool = False
    reviews: list[_ImportReview | None] | None = None
    feedback: list[Rating | None] | None = None
    authors: list[_ImportAuthor | None] | None = None
    intents: list[_ImportIntent | None] | None = None
    times: list[datetime] | None = None


class _ImportLine(_Strict):
    messages: list[_ImportMessage] = Field(min_length=1, max_length=10_000)
    metadata: _ImportMetadata = Field(default_factory=_ImportMetadata)

    @model_validator(mode="after")
    def _lists_match_turns(self) -> Self:
        assistant = sum(message.role == "assistant" for message in self.messages)
        user = sum(message.role == "user" for message in self.messages)
        if assistant + user == 0:
            raise ValueError("no user or assistant message")
        meta = self.metadata
        for name, values, expected, turns in (
            ("reviews", meta.reviews, assistant, "assistant turns"),
            ("feedback", meta.feedback, assistant, "assistant turns"),
            ("authors", meta.authors, assistant, "assistant turns"),
            ("intents", meta.intents, user, "user turns"),
            ("times", meta.times, len(self.messages), "messages"),
        ):
            if values is not None and len(values) != expected:
                raise ValueError(f"metadata.{name} has {len(values)} entries for {expected} {turns}")
        for index, (review, author) in enumerate(zip(meta.reviews or [], meta.authors or [], strict=False)):
            if review is not None and author is not None:
                raise ValueError(f"metadata.reviews[{index}]: only the bot's replies are reviewed, not staff ones")
        for tag in meta.tags:
            if not 1 <= len(tag.strip()) <= 64:
                raise ValueError(f"metadata.tags: {tag!r} is not 1 to 64 characters")
        return self


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _parse_line(number: int, line: str) -> tuple[_ImportLine | None, list[str]]:
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as error:
        return None, [f"line {number}: not valid JSON ({error.msg} at column {error.colno})"]
    try:
        return _ImportLine.model_validate(raw), []
    except ValidationError as error:
        problems = []
        for item in error.errors():
            where = ".".join(str(part) for part in item["loc"])
            problems.append(f"line {number}: {where + ': ' if where else ''}{item['msg']}")
        return None, problems


@dataclass
class ImportResult:
    """What an import stored."""

    conversations: int
    messages: int


def _store(session: Session, line: _ImportLine, now: datetime) -> tuple[str, int]:
    meta = line.metadata
    times = [_aware(moment) for moment in meta.times] if meta.times else None
    created_at = _aware(meta.created_at) if meta.created_at else (times[0] if times else now)
    conversation = Conversation(
        # A fresh token that nobody holds: imported history is closed and opened by staff only.
        channel="import",
        token_hash=crud.hash_token(secrets.token_urlsafe(32)),
        status=ConversationStatus.resolved,
        created_at=created_at,
        updated_at=max(times) if times else created_at,
    )
    messages: list[Message] = []
    attached: list[tuple[int, Review | IntentRelabel | Feedback]] = []
    assistant_turn = user_turn = 0
    for index, item in enumerate(line.messages):
        if item.role == "system":
            continue  # the source's system prompt is not part of the conversation
        at = times[index] if times else created_at
        position = len(messages)
        if item.role == "user":
            label = (meta.intents or [None] * (user_turn + 1))[user_turn]
            user_turn += 1
            predicted = (label.predicted or label.intent) if label else None
            messages.append(
                Message(
                    conversation_id=conversation.id,
                    role=Role.customer,
                    text=item.content,
                    created_at=at,
                    intent=predicted,
                    confidence=label.confidence if label else None,
                )
            )
            if label and label.intent and label.predicted and label.intent != label.predicted:
                attached.append(
                    (
                        position,
                        IntentRelabel(
                            message_id=0,
                            conversation_id="",
                            old_intent=label.predicted,
                            new_intent=label.intent,
                            updated_at=now,
                        ),
                    )
                )
            continue
        turn = assistant_turn
        assistant_turn += 1
        author = meta.authors[turn] if meta.authors else None
        messages.append(
            Message(
                conversation_id=conversation.id,
                role=Role.staff if author else Role.bot,
                author=author.name if author else None,
                text=item.content,
                created_at=at,
            )
        )
        review = meta.reviews[turn] if meta.reviews else None
        if review is not None:
            corrected = (review.corrected_text or "").strip() or None
            attached.append(
                (
                    position,
                    Review(
                        message_id=0,
                        conversation_id="",
                        rating=review.rating,
                        corrected_text=corrected,
                        created_at=now,
                        updated_at=now,
                    ),
                )
            )
        rating = meta.feedback[turn] if meta.feedback else None
        if rating is not None:
            attached.append((position, Feedback(message_id=0, conversation_id="", rating=rating, created_at=at)))
    csat = (
        CsatRating(
            conversation_id="", score=meta.csat.score, comment=meta.csat.comment, created_at=conversation.updated_at
        )
        if meta.csat
        else None
    )
    mark = (
        ConversationReview(
            conversation_id="", reviewed=meta.reviewed, use_for_training=meta.use_for_training, updated_at=now
        )
        if meta.reviewed or meta.use_for_training
        else None
    )
    crud.import_transcript(
        session=session,
        conversation=conversation,
        messages=messages,
        attached=attached,
        tags=[tag.strip() for tag in meta.tags],
        csat=csat,
        mark=mark,
    )
    return conversation.id, len(messages)


def import_jsonl(
    *, session: Session, lines: Iterable[str], max_conversations: int = MAX_IMPORT_CONVERSATIONS
) -> ImportResult:
    """Store the conversations of a JSONL file (the export format), all or none.

    Every line is checked first; any problem raises `ImportFailed` naming the lines, and nothing is stored.
    They are stored in batches of IMPORT_BATCH; a failure while storing deletes the batches already stored.
    Imported conversations get channel "import", status resolved and a fresh token that nobody holds.
    """
    parsed: list[_ImportLine] = []
    errors: list[str] = []
    count = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        count += 1
        if count > max_conversations:
            errors.append(f"line {number}: more than {max_conversations} conversations in one file; split it")
            break
        item, problems = _parse_line(number, line)
        if item is not None:
            parsed.append(item)
        errors.extend(problems)
    if errors:
        raise ImportFailed(errors)
    now = datetime.now(UTC)
    messages = 0
    committed: list[str] = []
    try:
        for start in range(0, len(parsed), IMPORT_BATCH):
            batch = [_store(session, item, now) for item in parsed[start : start + IMPORT_BATCH]]
            # One transaction per batch: SQLite's write lock is released in between, so customers' messages
            # are stored during a large import instead of failing on a lock held for the whole file.
            session.commit()
            committed += [conversation_id for conversation_id, _ in batch]
            messages += sum(count for _, count in batch)
            if start + IMPORT_BATCH < len(parsed):
                time.sleep(IMPORT_PAUSE_S)
    except Exception:
        session.rollback()
        if committed:  # all or none: take back the batches already committed
            crud.delete_conversations(session=session, conversation_ids=committed)
            session.commit()
        raise
    return ImportResult(conversations=len(parsed), messages=messages)
