"""What customers think: thumbs up/down on bot replies, a satisfaction score when a chat ends, ending it.

Ratings are stored with the conversation for staff to review and for choosing what to retrain on.
"""

from fastapi import APIRouter
from pydantic import BaseModel

from conversations import crud
from conversations.models import (
    ConversationPublic,
    CsatCreate,
    CsatPublic,
    FeedbackCreate,
    FeedbackPublic,
)
from serving import metrics
from serving.deps import CustomerToken, SessionDep

router = APIRouter(prefix="/api/conversations", tags=["feedback"])


class CustomerFeedback(BaseModel):
    """The customer's own ratings in one conversation, so the widget can show them after a reload."""

    ratings: list[FeedbackPublic]
    csat: CsatPublic | None


class ConversationEnded(BaseModel):
    """The conversation after the customer ended it."""

    conversation: ConversationPublic


@router.post("/{conversation_id}/messages/{message_id}/feedback")
def rate_reply(
    conversation_id: str, message_id: int, body: FeedbackCreate, token: CustomerToken, session: SessionDep
) -> FeedbackPublic:
    """Rate one bot reply up or down; rating it again replaces the earlier rating."""
    crud.open_conversation(session=session, conversation_id=conversation_id, token=token)
    feedback = crud.rate_reply(
        session=session, conversation_id=conversation_id, message_id=message_id, rating=body.rating
    )
    metrics.record_feedback(body.rating)
    return FeedbackPublic.model_validate(feedback)


@router.post("/{conversation_id}/csat")
def rate_conversation(conversation_id: str, body: CsatCreate, token: CustomerToken, session: SessionDep) -> CsatPublic:
    """Rate the whole conversation from 1 (very unhappy) to 5 (very happy), with an optional comment."""
    crud.open_conversation(session=session, conversation_id=conversation_id, token=token)
    comment = (body.comment or "").strip() or None
    csat = crud.rate_conversation(session=session, conversation_id=conversation_id, score=body.score, comment=comment)
    metrics.record_csat(body.score)
    return CsatPublic.model_validate(csat)


@router.get("/{conversation_id}/feedback")
def read_feedback(conversation_id: str, token: CustomerToken, session: SessionDep) -> CustomerFeedback:
    """The ratings this customer gave in the conversation."""
    crud.open_conversation(session=session, conversation_id=conversation_id, token=token)
    ratings = crud.list_feedback(session=session, conversation_id=conversation_id)
    csat = crud.get_csat(session=session, conversation_id=conversation_id)
    return CustomerFeedback(
        ratings=[FeedbackPublic.model_validate(rating) for rating in ratings],
        csat=CsatPublic.model_validate(csat) if csat else None,
    )


@router.post("/{conversation_id}/end")
def end_conversation(conversation_id: str, token: CustomerToken, session: SessionDep) -> ConversationEnded:
    """The customer ends the chat: the conversation is resolved and the widget asks for a rating."""
    crud.open_conversation(session=session, conversation_id=conversation_id, token=token)
    conversation = crud.end_conversation(session=session, conversation_id=conversation_id)
    return ConversationEnded(conversation=ConversationPublic.model_validate(conversation))
