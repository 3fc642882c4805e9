"""Periodic jobs that one app replica does for all of them (retention): each due run is claimed in the database."""

from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, or_

from conversations.models import PeriodicJob, utcnow


def claim_job(*, session: Session, name: str, every: timedelta, holder: str, now: datetime | None = None) -> bool:
    """Whether the caller should run job `name` now. Once it is due (`every` after its last claim; at once if it
    never ran) the first caller moves its claim time to now in one conditional UPDATE and gets True; every other
    replica asking before it is due again gets False. A run that fails is not retried before then."""
    now = now or utcnow()
    if session.get(PeriodicJob, name) is None:
        session.add(PeriodicJob(name=name))
        try:
            session.commit()
        except IntegrityError:
            session.rollback()  # another replica wrote the row first
    claimed = session.exec(  # type: ignore[call-overload]
        update(PeriodicJob)
        .where(
            col(PeriodicJob.name) == name,
            or_(col(PeriodicJob.claimed_at).is_(None), col(PeriodicJob.claimed_at) <= now - every),
        )
        .values(claimed_at=now, holder=holder[:200])
    )
    session.commit()
    return bool(claimed.rowcount)


def job_claimed_at(*, session: Session, name: str) -> datetime | None:
    """When job `name` was last claimed (by any replica); None if never."""
    job = session.get(PeriodicJob, name, populate_existing=True)
    return job.claimed_at if job is not None else None
