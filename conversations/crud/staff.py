"""Staff accounts, sign-in sessions and the audit log."""

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import delete
from sqlmodel import Session, col, select

from conversations.crud.conversations import hash_token
from conversations.crud.errors import EmailTaken, LastAdmin, StaffNotFound
from conversations.models import (
    AuditLog,
    StaffAccount,
    StaffRole,
    StaffSession,
    utcnow,
)


def normalize_email(email: str) -> str:
    return email.strip().lower()


def create_staff(
    *, session: Session, email: str, display_name: str, password_hash: str, role: StaffRole = StaffRole.staff
) -> StaffAccount:
    """Add a staff account; `password_hash` comes from the caller's password hasher, never the password."""
    email = normalize_email(email)
    if find_staff(session=session, email=email) is not None:
        raise EmailTaken(email)
    account = StaffAccount(email=email, display_name=display_name.strip(), password_hash=password_hash, role=role)
    session.add(account)
    session.commit()
    session.refresh(account)
    return account


def find_staff(*, session: Session, email: str) -> StaffAccount | None:
    statement = select(StaffAccount).where(StaffAccount.email == normalize_email(email))
    return session.exec(statement).first()


def get_staff(*, session: Session, staff_id: int) -> StaffAccount:
    account = session.get(StaffAccount, staff_id)
    if account is None:
        raise StaffNotFound(staff_id)
    return account


def list_staff(*, session: Session) -> Sequence[StaffAccount]:
    return session.exec(select(StaffAccount).order_by(StaffAccount.id)).all()


def set_password_hash(*, session: Session, staff_id: int, password_hash: str) -> None:
    """Store a new hash, e.g. one re-computed with stronger parameters at sign-in."""
    account = get_staff(session=session, staff_id=staff_id)
    account.password_hash = password_hash
    session.add(account)
    session.commit()


def _other_active_admins(session: Session, staff_id: int) -> int:
    statement = select(StaffAccount).where(
        StaffAccount.role == StaffRole.admin,
        StaffAccount.active == True,  # noqa: E712
        StaffAccount.id != staff_id,
    )
    return len(session.exec(statement).all())


def update_staff(
    *, session: Session, staff_id: int, active: bool | None = None, role: StaffRole | None = None
) -> StaffAccount:
    """Activate, deactivate or change the role of an account; a deactivated account is signed out at once."""
    account = get_staff(session=session, staff_id=staff_id)
    loses_admin = account.role == StaffRole.admin and account.active and (active is False or role == StaffRole.staff)
    if loses_admin and _other_active_admins(session, staff_id) == 0:
        raise LastAdmin(staff_id)
    if active is not None:
        account.active = active
    if role is not None:
        account.role = role
    session.add(account)
    if active is False:
        for staff_session in session.exec(select(StaffSession).where(StaffSession.staff_id == staff_id)).all():
            session.delete(staff_session)
    session.commit()
    session.refresh(account)
    return account


def create_staff_session(*, session: Session, staff_id: int, expires_at: datetime) -> tuple[StaffSession, str]:
    """Sign a staff member in; returns the session with the token for the cookie (only its hash is kept)."""
    # Sessions that ran out are otherwise only removed when their cookie comes back.
    expired = col(StaffSession.staff_id) == staff_id, col(StaffSession.expires_at) <= utcnow()
    session.exec(delete(StaffSession).where(*expired))
    token = secrets.token_urlsafe(32)
    staff_session = StaffSession(
        token_hash=hash_token(token), staff_id=staff_id, csrf_token=secrets.token_urlsafe(32), expires_at=expires_at
    )
    session.add(staff_session)
    session.commit()
    session.refresh(staff_session)
    return staff_session, token


def _aware(moment: datetime) -> datetime:
    # SQLite hands datetimes back without their zone; they were stored in UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def open_staff_session(*, session: Session, token: str) -> tuple[StaffSession, StaffAccount] | None:
    """The live session and its active account for a cookie token; None when signed out, expired or deactivated."""
    staff_session = session.exec(select(StaffSession).where(StaffSession.token_hash == hash_token(token))).first()
    if staff_session is None:
        return None
    if _aware(staff_session.expires_at) <= utcnow():
        session.delete(staff_session)
        session.commit()
        return None
    account = session.get(StaffAccount, staff_session.staff_id)
    if account is None or not account.active:
        return None
    return staff_session, account


def end_staff_session(*, session: Session, token: str) -> None:
    staff_session = session.exec(select(StaffSession).where(StaffSession.token_hash == hash_token(token))).first()
    if staff_session is not None:
        session.delete(staff_session)
        session.commit()


def record_audit(
    *, session: Session, actor_id: int | None, action: str, target: str = "", details: dict | None = None
) -> AuditLog:
    """Append one entry to the audit log (admin actions and every takeover step)."""
    entry = AuditLog(actor_id=actor_id, action=action, target=target[:200], details=details or {})
    session.add(entry)
    session.commit()
    session.refresh(entry)
    return entry


def list_audit(
    *, session: Session, action: str | None = None, actor_id: int | None = None, limit: int = 100, offset: int = 0
) -> Sequence[AuditLog]:
    """Audit entries, newest first."""
    statement = select(AuditLog)
    if action:
        statement = statement.where(AuditLog.action == action)
    if actor_id is not None:
        statement = statement.where(AuditLog.actor_id == actor_id)
    statement = statement.order_by(AuditLog.id.desc()).offset(offset).limit(limit)  # type: ignore[union-attr]
    return session.exec(statement).all()


def audit_actions(*, session: Session) -> list[str]:
    """Every action name the audit log holds, for filtering it."""
    return list(session.exec(select(AuditLog.action).distinct().order_by(col(AuditLog.action))).all())
