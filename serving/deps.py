"""Dependencies the routes ask for: the services built at start-up, a DB session, the customer token."""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bot.dialogue import DialogueManager
from bot.domain import DomainPack
from bot.llm import VLLMChatModel
from serving.errors import ApiError
from serving.settings import Settings


@dataclass
class Services:
    """Long-lived parts of the running app, built once in the lifespan."""

    settings: Settings
    engine: Engine
    pack: DomainPack
    llm: VLLMChatModel
    dialogue: DialogueManager


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
