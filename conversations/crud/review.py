"""Staff review: verdicts on bot replies, intent relabels, tags and whole-conversation marks."""

from collections.abc import Sequence

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute
from sqlmodel import Session, col, select

from conversations.crud.conversations import get_conversation
from conversations.crud.errors import (
    InvalidLabel,
    MessageNotFound,
    NotABotMessage,
    NotACustomerMessage,
    ReviewConflict,
)
from conversations.models import (
    ConversationReview,
    ConversationTag,
    IntentRelabel,
    Message,
    Review,
    ReviewRating,
    Role,
    Tag,
    utcnow,
)


class _StaleVersion(Exception):
    """The row was not at the expected version."""


def _compare_and_set(
    *,
    session: Session,
    table: type[Review] | type[ConversationReview],
    key: InstrumentedAttribute,
    key_value: object,
    expected_version: int,
    values: dict[str, object],
    first: Review | ConversationReview,
    what: str,
) -> Review | ConversationReview:
    """Save a versioned row whole or not at all: `first` when there is none yet (`expected_version` 0), else
    `values` onto the row still at `expected_version`. A lost race raises `ReviewConflict`; the row stays."""
    try:
        if expected_version == 0:
            # A second first save of the same row fails on its unique key.
            session.add(first)
            session.flush()
        else:
            # Compare-and-set in one statement: of two edits of the same version only one matches.
            result = session.exec(
                update(table)
                .where(col(key) == key_value, col(table.version) == expected_version)
                .values(**values, version=col(table.version) + 1)
            )
            if result.rowcount != 1:
                raise _StaleVersion
        session.commit()
    except (IntegrityError, _StaleVersion):
        session.rollback()
        current = session.exec(select(table).where(col(key) == key_value)).first()
        raise ReviewConflict(what, expected_version, current.version if current else 0) from None
    saved = session.exec(select(table).where(col(key) == key_value)).first()
    assert saved is not None
    return saved


def _label(value: str, what: str) -> str:
    label = value.strip()
    if not 1 <= len(label) <= 64:
        raise InvalidLabel(f"{what} must be 1 to 64 characters, got {value!r}")
    return label


def get_review(*, session: Session, message_id: int) -> Review | None:
    return session.exec(select(Review).where(Review.message_id == message_id)).first()


def list_reviews(*, session: Session, conversation_id: str) -> Sequence[Review]:
    statement = select(Review).where(Review.conversation_id == conversation_id).order_by(col(Review.message_id))
    return session.exec(statement).all()


def save_review(
    *,
    session: Session,
    message_id: int,
    rating: ReviewRating | str,
    corrected_text: str | None = None,
    reviewer_id: int | None = None,
    expected_version: int,
) -> Review:
    """Store a reviewer's verdict on one bot reply, whole or not at all.

    `expected_version` is the version the reviewer edited (0: there was no review yet). If anyone saved
    the review since, `ReviewConflict` is raised and the stored review stays as they left it.
    """
    rating = ReviewRating(rating)
    message = session.get(Message, message_id)
    if message is None:
        raise MessageNotFound(message_id)
    if message.role != Role.bot:
        raise NotABotMessage(message_id)
    corrected = (corrected_text or "").strip() or None
    now = utcnow()
    values: dict[str, object] = dict(rating=rating, corrected_text=corrected, reviewer_id=reviewer_id, updated_at=now)
    first = Review(message_id=message_id, conversation_id=message.conversation_id, created_at=now, **values)
    saved = _compare_and_set(
        session=session, table=Review, key=Review.message_id, key_value=message_id,
        expected_version=expected_version, values=values, first=first, what=f"the review of message {message_id}",
    )  # fmt: skip
    assert isinstance(saved, Review)
    return saved


def relabel_intent(
    *, session: Session, message_id: int, new_intent: str, reviewer_id: int | None = None
) -> IntentRelabel:
    """Correct the intent predicted for one customer message; the prediction stays on the message."""
    new_intent = _label(new_intent, "an intent")
    message = session.get(Message, message_id)
    if message is None:
        raise MessageNotFound(message_id)
    if message.role != Role.customer:
        raise NotACustomerMessage(message_id)
    for _attempt in range(2):
        relabel = session.exec(select(IntentRelabel).where(IntentRelabel.message_id == message_id)).first()
        if relabel is None:
            relabel = IntentRelabel(
                message_id=message_id,
                conversation_id=message.conversation_id,
                old_intent=message.intent,
                new_intent=new_intent,
            )
        relabel.new_intent, relabel.reviewer_id, relabel.updated_at = new_intent, reviewer_id, utcnow()
        session.add(relabel)
        try:
            session.commit()
        except IntegrityError:
            # A colleague relabelled the same message first; update their row instead.
            session.rollback()
            continue
        session.refresh(relabel)
        return relabel
    raise ReviewConflict(f"the intent of message {message_id}", 0, 1)


def list_relabels(*, session: Session, conversation_id: str) -> Sequence[IntentRelabel]:
    statement = select(IntentRelabel).where(IntentRelabel.conversation_id == conversation_id)
    return session.exec(statement.order_by(col(IntentRelabel.message_id))).all()


def _get_or_create_tag(session: Session, name: str) -> Tag:
    tag = session.exec(select(Tag).where(Tag.name == name)).first()
    if tag is None:
        tag = Tag(name=name)
        session.add(tag)
        session.flush()
    return tag


def add_tag(*, session: Session, conversation_id: str, name: str, reviewer_id: int | None = None) -> Tag:
    """Tag a conversation (names are lower-cased); tagging twice with the same name changes nothing."""
    name = _label(name, "a tag name").lower()
    get_conversation(session=session, conversation_id=conversation_id)
    for attempt in range(2):
        try:
            tag = _get_or_create_tag(session, name)
            assert tag.id is not None
            if session.get(ConversationTag, (conversation_id, tag.id)) is None:
                session.add(ConversationTag(conversation_id=conversation_id, tag_id=tag.id, reviewer_id=reviewer_id))
            session.commit()
        except IntegrityError:
            # A colleague created the tag or added it here at the same moment; the second try sees theirs.
            session.rollback()
            if attempt:
                raise
            continue
        break
    session.refresh(tag)
    return tag


def remove_tag(*, session: Session, conversation_id: str, name: str) -> bool:
    """Take a tag off a conversation; False when it did not have it. The tag itself stays for reuse."""
    tag = session.exec(select(Tag).where(Tag.name == name.strip().lower())).first()
    link = session.get(ConversationTag, (conversation_id, tag.id)) if tag is not None else None
    if link is None:
        return False
    session.delete(link)
    session.commit()
    return True


def list_tags(*, session: Session, conversation_id: str) -> list[str]:
    statement = (
        select(Tag.name)
        .join(ConversationTag, col(ConversationTag.tag_id) == Tag.id)
        .where(ConversationTag.conversation_id == conversation_id)
        .order_by(Tag.name)
    )
    return list(session.exec(statement).all())


def list_all_tags(*, session: Session) -> Sequence[Tag]:
    return session.exec(select(Tag).order_by(Tag.name)).all()


def get_conversation_review(*, session: Session, conversation_id: str) -> ConversationReview | None:
    statement = select(ConversationReview).where(ConversationReview.conversation_id == conversation_id)
    return session.exec(statement).first()


def mark_conversation(
    *,
    session: Session,
    conversation_id: str,
    reviewed: bool,
    use_for_training: bool,
    reviewer_id: int | None = None,
    expected_version: int,
) -> ConversationReview:
    """Mark a whole conversation reviewed and/or usable for training; versioned like `save_review`."""
    get_conversation(session=session, conversation_id=conversation_id)
    values: dict[str, object] = dict(
        reviewed=reviewed, use_for_training=use_for_training, reviewer_id=reviewer_id, updated_at=utcnow()
    )
    saved = _compare_and_set(
        session=session, table=ConversationReview, key=ConversationReview.conversation_id, key_value=conversation_id,
        expected_version=expected_version, values=values, what=f"the review mark of conversation {conversation_id}",
        first=ConversationReview(conversation_id=conversation_id, **values),
    )  # fmt: skip
    assert isinstance(saved, ConversationReview)
    return saved
