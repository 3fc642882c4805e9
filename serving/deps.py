"""Dependencies the routes ask for: the services built at start-up, a DB session, the customer token."""

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bot.dialogue import DialogueManager
from bot.domain import DomainPack
from bot.llm import VLLMChatModel
from serving.auth import SignedIn, StaffAuthError, check_csrf, signed_in
from serving.errors import ApiError
from serving.settings import Settings

if TYPE_CHECKING:
    from serving.knowledge import KnowledgeSync
    from serving.promotions import PromotionWatcher
    from serving.training import TrainingManager


@dataclass
class Services:
    """Long-lived parts of the running app, built once in the lifespan."""

    settings: Settings
    engine: Engine
    pack: DomainPack
    llm: VLLMChatModel
    dialogue: DialogueManager
    classifier_name: str | None = None
    # The help articles' search index, rebuilt when the knowledge base changes.
    knowledge: "KnowledgeSync | None" = None
    training: "TrainingManager | None" = None
    promotions: "PromotionWatcher | None" = None
    # Work that outlives a request (summary updates); referenced so it is not garbage-collected.
    background: set[asyncio.Task] = field(default_factory=set)


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    with Session(services.engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def customer_token(authorization: Annotated[str | None, Header()] = None) -> str:
    """The conversation token from `Authorization: Bearer <token>`."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing_token", "Send the conversation token as 'Authorization: Bearer <token>'.")
    return token.strip()


CustomerToken = Annotated[str, Depends(customer_token)]


def staff_session(request: Request, session: SessionDep) -> SignedIn:
    """The staff member signed in with the session cookie; a customer token does not count."""
    found = signed_in(session, request)
    if found is None:
        raise StaffAuthError(401, "not_signed_in", "Sign in to the staff console first.")
    return found


async def current_staff(request: Request, found: Annotated[SignedIn, Depends(staff_session)]) -> SignedIn:
    await check_csrf(request, found.csrf_token)
    return found


CurrentStaff = Annotated[SignedIn, Depends(current_staff)]


def current_admin(found: CurrentStaff) -> SignedIn:
    if not found.is_admin:
        raise StaffAuthError(403, "admins_only", "Only admins may do this.")
    return found


CurrentAdmin = Annotated[SignedIn, Depends(current_admin)]
