"""Action calls: every call the bot made to the company's systems, the audit of changes and the failures list."""

from collections.abc import Sequence

from sqlmodel import Session, col, select

from conversations.models import ActionCall

# Outcomes that are not failures of the call: the system answered, or the customer said no.
NOT_FAILED = frozenset({"ok", "not found", "refused", "declined"})


def add_action_call(
    *, session: Session, conversation_id: str, message_id: int | None, trace: dict, identity: str
) -> ActionCall:
    """Record one action call from its trace (whose inputs are already masked); does not commit."""
    outcome = str(trace.get("outcome", ""))
    call = ActionCall(
        conversation_id=conversation_id, message_id=message_id, action=str(trace.get("name", ""))[:64],
        changes=bool(trace.get("changes")), identity=identity[:160], inputs=dict(trace.get("inputs") or {}),
        outcome=outcome[:64], failed=outcome not in NOT_FAILED, status_code=trace.get("status_code"),
        attempts=int(trace.get("attempts") or 0), ms=float(trace.get("ms") or 0.0),
        reason=(str(trace["reason"])[:300] if trace.get("reason") else None),
        idempotency_key=trace.get("idempotency_key"),
    )  # fmt: skip
    session.add(call)
    return call


def list_action_calls(
    *,
    session: Session,
    failed: bool | None = None,
    changes: bool | None = None,
    conversation_id: str | None = None,
    offset: int = 0,
    limit: int = 100,
) -> Sequence[ActionCall]:
    """Action calls, newest first; `failed` / `changes` / `conversation_id` narrow them."""
    statement = select(ActionCall)
    if failed is not None:
        statement = statement.where(ActionCall.failed == failed)
    if changes is not None:
        statement = statement.where(ActionCall.changes == changes)
    if conversation_id is not None:
        statement = statement.where(ActionCall.conversation_id == conversation_id)
    statement = statement.order_by(col(ActionCall.id).desc()).offset(offset).limit(limit)
    return session.exec(statement).all()
