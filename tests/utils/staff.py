"""Factories for the staff console's tests: accounts, signed-in sessions and conversations in a given state."""

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session

from conversations import crud
from conversations.models import ConversationStatus, Rating, Role, StaffRole, utcnow
from serving.auth import SESSION_COOKIE, hash_password

PASSWORD = "correct horse battery staple"


@dataclass
class Staff:
    """A staff account with a live session: the cookie to send and the CSRF token its writes need."""

    id: int
    email: str
    name: str
    cookie: str
    csrf: str

    @property
    def cookies(self) -> dict[str, str]:
        return {SESSION_COOKIE: self.cookie}

    @property
    def headers(self) -> dict[str, str]:
        return {"X-CSRF-Token": self.csrf}


def make_staff(engine: Engine, email: str, name: str, role: StaffRole = StaffRole.staff) -> Staff:
    """An account (password `PASSWORD`) already signed in, without going through the sign-in form."""
    with Session(engine) as session:
        account = crud.create_staff(
            session=session, email=email, display_name=name, password_hash=hash_password(PASSWORD), role=role
        )
        assert account.id is not None
        return sign_in(engine, account.id, email, name)


def sign_in(engine: Engine, staff_id: int, email: str = "", name: str = "") -> Staff:
    """Another live session for an existing account."""
    with Session(engine) as session:
        staff_session, token = crud.create_staff_session(
            session=session, staff_id=staff_id, expires_at=utcnow() + timedelta(hours=1)
        )
        return Staff(id=staff_id, email=email, name=name, cookie=token, csrf=staff_session.csrf_token)


def seed_conversation(
    engine: Engine, *, status: ConversationStatus = ConversationStatus.bot, reason: str | None = None
) -> tuple[str, str, dict[str, int]]:
    """A conversation as the bot would have left it: a return request answered (and rated down by the
    customer), then a complaint handed to a human. Returns its id, the customer's token and message ids."""
    with Session(engine) as session:
        conversation, token = crud.create_conversation(session=session, channel="widget")
        cid = conversation.id
        ask = crud.add_message(
            session=session, conversation_id=cid, role=Role.customer, text="My lamp arrived with a cracked shade.",
            intent="return_item", confidence=0.62,
        )  # fmt: skip
        answer = crud.add_message(
            session=session, conversation_id=cid, role=Role.bot, model="domain-v1", intent="return_item",
            confidence=0.62, decision="answer", latency_ms=840.0,
            text="You can return any item within 30 days for a full refund. Start a return from your account page.",
            trace={
                "decision": "answer", "reason": "intent return_item", "intent": "return_item", "confidence": 0.62,
                "top_intents": [["return_item", 0.62], ["damaged_item", 0.31]], "model": "domain-v1",
                "prompt_tokens": 412, "dropped_turns": 0, "summary_used": False, "slots": {},
                "stages_ms": {"classify": 3.1, "route": 0.1, "total": 840.0},
            },
        )  # fmt: skip
        crud.rate_reply(session=session, conversation_id=cid, message_id=answer.id or 0, rating=Rating.down)
        complaint = crud.add_message(
            session=session, conversation_id=cid, role=Role.customer, intent="complaint", confidence=0.88,
            text="That doesn't help, it's broken, not unwanted. I want to talk to a person.",
        )  # fmt: skip
        handoff = crud.add_message(
            session=session, conversation_id=cid, role=Role.bot, model="domain-v1", intent="complaint",
            confidence=0.88, decision="handoff", text="I'm passing you to a colleague who can sort this out.",
            trace={"decision": "handoff", "reason": "intent complaint is handled by people", "intent": "complaint",
                   "confidence": 0.88, "top_intents": [["complaint", 0.88]], "model": "domain-v1"},
        )  # fmt: skip
        crud.save_dialogue_state(
            session=session, conversation_id=cid, status=status, slots={}, misses=0, negative_streak=0,
            pending_intent=None, attention_reason=reason,
        )  # fmt: skip
        ids = {"ask": ask.id, "answer": answer.id, "complaint": complaint.id, "handoff": handoff.id}
        return cid, token, {name: value for name, value in ids.items() if value is not None}
