"""Retraining runs (queued, claimed, updated) and the reviewed conversations and relabels they learn from."""

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, text, update
from sqlmodel import Session, col, select

from conversations.crud.conversations import list_messages
from conversations.crud.errors import RunAlreadyActive, RunNotFound, RunNotResumable
from conversations.models import (
    ConversationReview,
    Feedback,
    IntentRelabel,
    Message,
    Review,
    Role,
    RunStatus,
    TrainingRun,
)

# PostgreSQL advisory lock taken while queueing a retraining run (conversations.db uses 73_310_001).
_RUN_QUEUE_LOCK_KEY = 73_310_002


def create_training_run(*, session: Session, trigger: str) -> TrainingRun:
    """Queue a retraining run, unless one is already queued or running."""
    if session.connection().dialect.name == "postgresql":
        # App replicas check the schedule at the same moment: they take turns, so only one queues the run.
        session.connection().execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _RUN_QUEUE_LOCK_KEY})
    active = session.exec(
        select(TrainingRun).where(col(TrainingRun.status).in_([RunStatus.queued, RunStatus.running]))
    ).first()
    if active is not None:
        raise RunAlreadyActive(f"run {active.id} is {active.status}")
    run = TrainingRun(trigger=trigger)
    session.add(run)
    session.commit()
    session.refresh(run)
    return run


def get_training_run(*, session: Session, run_id: int) -> TrainingRun:
    run = session.get(TrainingRun, run_id)
    if run is None:
        raise RunNotFound(run_id)
    return run


def list_training_runs(*, session: Session, limit: int = 50) -> Sequence[TrainingRun]:
    return session.exec(select(TrainingRun).order_by(col(TrainingRun.id).desc()).limit(limit)).all()


def update_training_run(*, session: Session, run_id: int, **changes: object) -> TrainingRun:
    run = get_training_run(session=session, run_id=run_id)
    for name, value in changes.items():
        setattr(run, name, value)
    session.add(run)
    session.commit()
    session.refresh(run)
    return run


def training_runs_with_status(*, session: Session, statuses: Sequence[RunStatus]) -> Sequence[TrainingRun]:
    return session.exec(select(TrainingRun).where(col(TrainingRun.status).in_(statuses))).all()


def latest_training_run(*, session: Session) -> TrainingRun | None:
    return session.exec(select(TrainingRun).order_by(col(TrainingRun.id).desc())).first()


def requeue_training_run(*, session: Session, run_id: int) -> TrainingRun:
    """Queue an interrupted, failed or cancelled run again, unless another run is queued or running."""
    run = get_training_run(session=session, run_id=run_id)
    if run.status not in (RunStatus.interrupted, RunStatus.failed, RunStatus.cancelled):
        raise RunNotResumable(f"run {run_id} is {run.status}")
    active = session.exec(
        select(TrainingRun).where(col(TrainingRun.status).in_([RunStatus.queued, RunStatus.running]))
    ).first()
    if active is not None:
        raise RunNotResumable(f"run {active.id} is {active.status}")
    return update_training_run(
        session=session, run_id=run_id, status=RunStatus.queued, cancel_requested=False, error=None
    )


def count_training_marks(*, session: Session, since: datetime | None = None) -> int:
    """Conversations marked for training (since a moment, when given): what a scheduled retraining waits for."""
    query = (
        select(func.count()).select_from(ConversationReview).where(col(ConversationReview.use_for_training).is_(True))
    )
    if since is not None:
        query = query.where(ConversationReview.updated_at > since)
    return session.exec(query).one()


def claim_training_run(*, session: Session, worker_pid: int | None = None) -> TrainingRun | None:
    """The oldest queued run, now marked running for the calling worker; None when none is queued.

    The status check and the change are one UPDATE, so two workers never claim the same run.
    """
    queued = session.exec(
        select(TrainingRun.id).where(TrainingRun.status == RunStatus.queued).order_by(col(TrainingRun.id))
    ).all()
    for run_id in queued:
        claimed = session.exec(
            update(TrainingRun)
            .where(col(TrainingRun.id) == run_id, col(TrainingRun.status) == RunStatus.queued)
            .values(status=RunStatus.running, worker_pid=worker_pid)
        )
        session.commit()
        if claimed.rowcount == 1:
            return get_training_run(session=session, run_id=run_id)
    return None


def training_conversations(*, session: Session) -> list[dict]:
    """Conversations staff marked for training, with each reply's review and each message's intent.

    Each item: {"id", "turns": [{"role": "user"|"assistant", "content", "rating", "correction", "intent"}]}.
    A staff review outranks the customer's thumbs; a relabelled intent outranks the prediction.
    """
    marked = session.exec(
        select(ConversationReview.conversation_id).where(col(ConversationReview.use_for_training).is_(True))
    ).all()
    items = []
    for conversation_id in marked:
        messages = list_messages(session=session, conversation_id=conversation_id)
        ids = [message.id for message in messages]
        reviews = {r.message_id: r for r in session.exec(select(Review).where(col(Review.message_id).in_(ids)))}
        thumbs = {f.message_id: f for f in session.exec(select(Feedback).where(col(Feedback.message_id).in_(ids)))}
        relabels = {
            r.message_id: r.new_intent
            for r in session.exec(select(IntentRelabel).where(col(IntentRelabel.message_id).in_(ids)))
        }
        turns = []
        for message in messages:
            if message.failed:
                continue
            review, thumb = reviews.get(message.id), thumbs.get(message.id)
            turns.append(
                {
                    "role": "user" if message.role == Role.customer else "assistant",
                    "content": message.text,
                    "rating": review.rating.value if review else (thumb.rating.value if thumb else None),
                    "correction": review.corrected_text if review else None,
                    "intent": relabels.get(message.id, message.intent),
                }
            )
        items.append({"id": conversation_id, "turns": turns})
    return items


def relabelled_examples(*, session: Session) -> list[tuple[str, str]]:
    """(customer message text, intent staff gave it), for retraining the intent classifier."""
    rows = session.exec(select(Message.text, IntentRelabel.new_intent).join(IntentRelabel)).all()
    return [(text, intent) for text, intent in rows]
