"""What customers think: thumbs up/down on bot replies, a satisfaction score when a chat ends, ending it.

Ratings are stored with the conversation for staff to review and for choosing what to retrain on.
"""

from fastapi import APIRouter
from pydantic import BaseModel
from sqlmodel import Session

from conversations import crud
from conversations.models import (
    ConversationPublic,
    CsatCreate,
    CsatPublic,
    FeedbackCreate,
    FeedbackPublic,
)
from serving import metrics
from serving.deps import CustomerToken, RowId, ServicesDep, in_session

router = APIRouter(prefix="/api/conversations", tags=["feedback"])


class CustomerFeedback(BaseModel):
    """The customer's own ratings in one conversation, so the widget can show them after a reload."""

    ratings: list[FeedbackPublic]
    csat: CsatPublic | None


class ConversationEnded(BaseModel):
    """The conversation after the customer ended it."""

    conversation: ConversationPublic


# Customers call these at scale, so each runs in one short session of its own (see `in_session`).


@router.post("/{conversation_id}/messages/{message_id}/feedback")
async def rate_reply(
    conversation_id: str, message_id: RowId, body: FeedbackCreate, token: CustomerToken, services: ServicesDep
) -> FeedbackPublic:
    """Rate one bot reply up or down; rating it again replaces the earlier rating."""

    def rate(session: Session) -> FeedbackPublic:
        crud.open_conversation(session=session, conversation_id=conversation_id, token=token)
        feedback = crud.rate_reply(
            session=session, conversation_id=conversation_id, message_id=message_id, rating=body.rating
        )
        return FeedbackPublic.model_validate(feedback)

    rated = await in_session(services, rate)
    metrics.record_feedback(body.rating)
    return rated


@router.post("/{conversation_id}/csat")
async def rate_conversation(
    conversation_id: str, body: CsatCreate, token: CustomerToken, services: ServicesDep
) -> CsatPublic:
    """Rate the whole conversation from 1 (very unhappy) to 5 (very happy), with an optional comment."""
    comment = (body.comment or "").strip() or None

    def rate(session: Session) -> CsatPublic:
        crud.open_conversation(session=session, conversation_id=conversation_id, token=token)
        csat = crud.rate_conversation(
            session=session, conversation_id=conversation_id, score=body.score, comment=comment
        )
        return CsatPublic.model_validate(csat)

    rated = await in_session(services, rate)
    metrics.record_csat(body.score)
    return rated


@router.get("/{conversation_id}/feedback")
async def read_feedback(conversation_id: str, token: CustomerToken, services: ServicesDep) -> CustomerFeedback:
    """The ratings this customer gave in the conversation."""

    def read(session: Session) -> CustomerFeedback:
        crud.open_conversation(session=session, conversation_id=conversation_id, token=token)
        ratings = crud.list_feedback(session=session, conversation_id=conversation_id)
        csat = crud.get_csat(session=session, conversation_id=conversation_id)
        return CustomerFeedback(
            ratings=[FeedbackPublic.model_validate(rating) for rating in ratings],
            csat=CsatPublic.model_validate(csat) if csat else None,
        )

    return await in_session(services, read)


@router.post("/{conversation_id}/end")
async def end_conversation(conversation_id: str, token: CustomerToken, services: ServicesDep) -> ConversationEnded:
    """The customer ends the chat: the conversation is resolved and the widget asks for a rating."""

    def end(session: Session) -> ConversationEnded:
        crud.open_conversation(session=session, conversation_id=conversation_id, token=token)
        conversation = crud.end_conversation(session=session, conversation_id=conversation_id)
        return ConversationEnded(conversation=ConversationPublic.model_validate(conversation))

    return await in_session(services, end)
