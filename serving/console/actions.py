"""What staff do, shared by the console's forms and the JSON API: each step is stored, audited where it
must be, and its typed store errors become `ApiError`s with one status and code each.
"""

from sqlmodel import Session

from conversations import crud
from conversations.models import (
    Conversation,
    ConversationReview,
    ConversationReviewCreate,
    IntentRelabel,
    Message,
    Review,
    ReviewCreate,
    StaffAccount,
    StaffRole,
)
from serving.auth import SignedIn, account_problem, hash_password
from serving.chat import clean_text
from serving.desk import Desk
from serving.errors import ApiError


def _target(conversation_id: str) -> str:
    return f"conversation:{conversation_id}"


def claim(session: Session, signed: SignedIn, conversation_id: str, force: bool = False) -> Conversation:
    """Take a conversation over from the bot (pending or live); the bot stays silent until it is handed back.

    Admins may `force` it away from a colleague; anyone may take it from a deactivated account.
    """
    before = crud.get_conversation(session=session, conversation_id=conversation_id).status
    previous = crud.get_assignment(session=session, conversation_id=conversation_id)
    previous_owner = previous.staff_id if previous is not None else None
    if force and not signed.is_admin:
        raise ApiError(403, "admins_only", "Only admins may take a conversation from a colleague.")
    conversation = crud.claim_conversation(
        session=session, conversation_id=conversation_id, staff_id=_id(signed.staff), force=force
    )
    if before != conversation.status or previous_owner != signed.staff.id:
        details: dict[str, object] = {"from_status": str(before)}
        if previous_owner is not None and previous_owner != signed.staff.id:
            details["from_staff"] = previous_owner
        crud.record_audit(
            session=session, actor_id=signed.staff.id, action="takeover.claim", target=_target(conversation_id),
            details=details,
        )  # fmt: skip
    return conversation


def reply(
    session: Session, signed: SignedIn, conversation_id: str, text: str, max_chars: int, desk: Desk | None = None
) -> Message:
    """Answer the customer as the staff member; their widget shows it under the staff member's name, and the
    desk stops the first-response timer and e-mails the answer to a customer who left an address."""
    text = clean_text(text, max_chars)
    message = crud.post_staff_message(
        session=session, conversation_id=conversation_id, staff_id=_id(signed.staff), text=text
    )
    if desk is not None:
        desk.staff_replied(session, conversation_id, signed.staff.display_name, text)
    crud.record_audit(
        session=session, actor_id=signed.staff.id, action="takeover.reply", target=_target(conversation_id),
        details={"message_id": message.id, "chars": len(text)},
    )  # fmt: skip
    return message


def hand_back(session: Session, signed: SignedIn, conversation_id: str) -> Conversation:
    """Give the conversation back to the bot, which answers the customer's next message again."""
    conversation = crud.hand_back(session=session, conversation_id=conversation_id, staff_id=_id(signed.staff))
    crud.record_audit(
        session=session, actor_id=signed.staff.id, action="takeover.hand_back", target=_target(conversation_id)
    )
    return conversation


def resolve(session: Session, signed: SignedIn, conversation_id: str) -> Conversation:
    """Close the conversation; it reopens with the bot if the customer writes again."""
    before = crud.get_conversation(session=session, conversation_id=conversation_id).status
    conversation = crud.resolve_conversation(
        session=session, conversation_id=conversation_id, staff_id=_id(signed.staff)
    )
    crud.record_resolution(session=session, conversation_id=conversation_id)
    crud.record_audit(
        session=session, actor_id=signed.staff.id, action="takeover.resolve", target=_target(conversation_id),
        details={"from_status": str(before)},
    )  # fmt: skip
    return conversation


def create_account(
    session: Session, signed: SignedIn, *, email: str, display_name: str, password: str, role: StaffRole
) -> StaffAccount:
    """An admin adds a staff or admin account."""
    problem = account_problem(email, display_name, password)
    if problem is not None:
        raise ApiError(422, "invalid_account", problem)
    account = crud.create_staff(
        session=session, email=email, display_name=display_name, password_hash=hash_password(password), role=role
    )
    crud.record_audit(
        session=session, actor_id=signed.staff.id, action="staff.create", target=f"staff:{account.id}",
        details={"email": account.email, "role": str(account.role)},
    )  # fmt: skip
    return account


def update_account(
    session: Session, signed: SignedIn, staff_id: int, *, active: bool | None = None, role: StaffRole | None = None
) -> StaffAccount:
    """An admin deactivates, reactivates or changes the role of an account; deactivation signs it out."""
    account = crud.update_staff(session=session, staff_id=staff_id, active=active, role=role)
    changes: dict[str, object] = {}
    if active is not None:
        changes["active"] = active
    if role is not None:
        changes["role"] = str(role)
    crud.record_audit(
        session=session, actor_id=signed.staff.id, action="staff.update", target=f"staff:{staff_id}", details=changes
    )
    return account


def _id(account: StaffAccount) -> int:
    assert account.id is not None
    return account.id


def review(session: Session, signed: SignedIn, conversation_id: str, message_id: int, body: ReviewCreate) -> Review:
    """Mark one bot reply good or bad, with the reply it should have given."""
    _message_of(session, conversation_id, message_id)
    return crud.save_review(
        session=session, message_id=message_id, rating=body.rating, corrected_text=body.corrected_text,
        reviewer_id=signed.staff.id, expected_version=body.expected_version,
    )  # fmt: skip


def relabel(
    session: Session, signed: SignedIn, conversation_id: str, message_id: int, new_intent: str, known: set[str]
) -> IntentRelabel:
    """Correct the intent the classifier predicted for one customer message."""
    _message_of(session, conversation_id, message_id)
    if new_intent.strip() not in known:
        raise ApiError(422, "unknown_intent", "This intent is not in the domain pack.")
    return crud.relabel_intent(
        session=session, message_id=message_id, new_intent=new_intent, reviewer_id=signed.staff.id
    )


def add_tag(session: Session, signed: SignedIn, conversation_id: str, name: str) -> list[str]:
    crud.add_tag(session=session, conversation_id=conversation_id, name=name, reviewer_id=signed.staff.id)
    return crud.list_tags(session=session, conversation_id=conversation_id)


def remove_tag(session: Session, conversation_id: str, name: str) -> list[str]:
    crud.get_conversation(session=session, conversation_id=conversation_id)
    crud.remove_tag(session=session, conversation_id=conversation_id, name=name)
    return crud.list_tags(session=session, conversation_id=conversation_id)


def mark(
    session: Session, signed: SignedIn, conversation_id: str, body: ConversationReviewCreate
) -> ConversationReview:
    """Mark the conversation reviewed, and whether it may be used to retrain the bot."""
    return crud.mark_conversation(
        session=session, conversation_id=conversation_id, reviewed=body.reviewed,
        use_for_training=body.use_for_training, reviewer_id=signed.staff.id,
        expected_version=body.expected_version,
    )  # fmt: skip


def _message_of(session: Session, conversation_id: str, message_id: int) -> Message:
    crud.get_conversation(session=session, conversation_id=conversation_id)
    return crud.get_message(session=session, conversation_id=conversation_id, message_id=message_id)
