"""Rate-limit counts kept in the database, so several app replicas share one limit.

Each key counts hits in fixed windows; a hit is admitted while the previous window's count, weighted by how
much of it still overlaps the sliding window, plus this window's count stays under the limit (the two-window
estimate of a sliding window). The increment is one conditional upsert, so concurrent requests on any number
of replicas never admit more than the limit.
"""

import math

from sqlalchemy import delete, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col

from conversations.models import RateCount


def take_hit(*, session: Session, key: str, limit: int, window_s: int, now: float) -> float:
    """Count one hit of `key` and return 0, or count nothing and return the seconds until one is admitted."""
    start = int(now // window_s) * window_s
    previous = session.get(RateCount, (key, start - window_s))
    previous_hits = previous.hits if previous else 0
    # End the read before writing: SQLite refuses to turn a read transaction into a write one once another
    # writer has committed ("database is locked" at once, without waiting). The previous window is closed.
    session.commit()
    overlap = 1 - (now - start) / window_s
    carried = math.floor(previous_hits * overlap)
    allowed = limit - carried
    if allowed > 0:
        insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        statement = (
            insert(RateCount)
            .values(key=key, window_start=start, hits=1)
            .on_conflict_do_update(
                index_elements=["key", "window_start"],
                set_={"hits": RateCount.hits + 1},  # type: ignore[operator]
                where=col(RateCount.hits) < allowed,
            )
            .returning(col(RateCount.hits))
        )
        admitted = session.exec(statement).first()  # type: ignore[call-overload]
        session.commit()
        if admitted is not None:
            return 0.0
    current = session.get(RateCount, (key, start), populate_existing=True)
    in_window = current.hits if current else 0
    room = limit - in_window
    if room <= 0 or not previous_hits:
        return start + window_s - now
    # The previous window's weight falls as time passes: admitted once previous * overlap < room.
    return max(start + window_s * (1 - room / previous_hits) - now, 0.1)


def give_back_hit(*, session: Session, key: str, window_s: int, now: float) -> None:
    """Uncount a hit taken in the current window (a sign-in attempt that turned out right); one UPDATE."""
    start = int(now // window_s) * window_s
    session.exec(  # type: ignore[call-overload]
        update(RateCount)
        .where(col(RateCount.key) == key, col(RateCount.window_start) == start, col(RateCount.hits) > 0)
        .values(hits=col(RateCount.hits) - 1)
    )
    session.commit()


def forget_counts(*, session: Session, before: float) -> int:
    """Delete the counts of windows that started before `before` (seconds since the epoch)."""
    result = session.exec(delete(RateCount).where(col(RateCount.window_start) < before))  # type: ignore[call-overload]
    session.commit()
    return result.rowcount
