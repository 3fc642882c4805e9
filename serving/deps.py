"""Dependencies the routes ask for: the services built at start-up, a DB session, the customer token."""

from collections.abc import Callable, Iterator
from typing import Annotated, TypeVar

from fastapi import Depends, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session

from conversations import crud
from serving.auth import SignedIn, StaffAuthError, check_csrf, signed_in
from serving.errors import ApiError
from serving.limits import client_address
from serving.services import Services

T = TypeVar("T")


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]

# Every id column is PostgreSQL's `integer`: a larger id cannot exist, so one in a URL is refused (422)
# before the database is asked (SQLite and PostgreSQL both fail on a number beyond their integer range).
MAX_ROW_ID = 2**31 - 1
RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
# An offset or an "after this id" cursor in a query string, bounded alike.
Cursor = Annotated[int, Query(ge=0, le=MAX_ROW_ID)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    with Session(services.engine) as session:
        yield session


# A sync route's session lives until its response is sent, and FastAPI validates that response on a
# worker thread: under a burst, sessions wait for threads while every thread waits for a connection.
# Fine for the few staff; routes that customers call at scale use `in_session` instead.
SessionDep = Annotated[Session, Depends(get_session)]


async def in_session(services: Services, work: Callable[[Session], T]) -> T:
    """Run `work` on a worker thread with a session of its own; the connection is back in the pool when
    it returns, so nothing waits on a thread or the network while holding one."""

    def run() -> T:
        with Session(services.engine) as session:
            return work(session)

    return await run_in_threadpool(run)


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


# --- Rate limits (serving/limits.py), checked after the credentials that would spend them. ---


async def limit_sending(conversation_id: str, token: CustomerToken, request: Request, services: ServicesDep) -> None:
    """Dependency of the send-message route: the token is checked first, so strangers cannot spend the
    conversation's limit; then 429 once the conversation or the address has sent too much."""
    await in_session(
        services, lambda session: crud.open_conversation(session=session, conversation_id=conversation_id, token=token)
    )
    values = {"send:conversation": conversation_id, "send:address": client_address(request)}
    await run_in_threadpool(lambda: services.limiter.admit(**values))


async def limit_following(conversation_id: str, token: CustomerToken, services: ServicesDep) -> None:
    """Dependency of the event stream: a valid token, then at most so many streams opened a minute (each
    lasts at most a minute, so this also bounds the streams open at once)."""
    await in_session(
        services, lambda session: crud.open_conversation(session=session, conversation_id=conversation_id, token=token)
    )
    await run_in_threadpool(lambda: services.limiter.admit(**{"follow:conversation": conversation_id}))


async def limit_opening(request: Request, services: ServicesDep) -> None:
    """Dependency of opening a conversation: per address and for everyone together."""
    values = {"open:address": client_address(request), "open:everyone": "*"}
    await run_in_threadpool(lambda: services.limiter.admit(**values))


SendLimited = Annotated[None, Depends(limit_sending)]
FollowLimited = Annotated[None, Depends(limit_following)]
OpenLimited = Annotated[None, Depends(limit_opening)]
