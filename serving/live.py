"""One database poll per app process for every open event stream: which followed conversations changed.

A stream reads its conversation only when told it changed, so a thousand idle streams cost one cheap
query a second and hold no connection between polls.
"""

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.engine import Engine
from sqlmodel import Session

from conversations import crud

logger = logging.getLogger(__name__)


class ConversationWatcher:
    """Polls the change marks of the conversations that event streams follow and wakes those streams.

    Polling the database, not an in-process broker, keeps replicas honest: a message written by another
    app process (a staff reply, a reply streamed elsewhere) wakes the stream here too.
    """

    def __init__(self, engine: Engine, poll_s: float = 1.0) -> None:
        self.engine = engine
        self.poll_s = poll_s
        self._followers: dict[str, set[asyncio.Event]] = {}
        self._marks: dict[str, tuple | None] = {}
        self.polls = 0

    @contextmanager
    def follow(self, conversation_id: str) -> Iterator[asyncio.Event]:
        """An event that is set whenever the conversation changes (or disappears) while the block runs."""
        changed = asyncio.Event()
        self._followers.setdefault(conversation_id, set()).add(changed)
        try:
            yield changed
        finally:
            followers = self._followers.get(conversation_id, set())
            followers.discard(changed)
            if not followers:
                self._followers.pop(conversation_id, None)
                self._marks.pop(conversation_id, None)

    def _read_marks(self, conversation_ids: list[str]) -> dict[str, tuple]:
        with Session(self.engine) as session:
            return crud.change_marks(session=session, conversation_ids=conversation_ids)

    async def poll_once(self) -> None:
        followed = list(self._followers)
        if not followed:
            return
        marks = await run_in_threadpool(self._read_marks, followed)
        self.polls += 1
        for conversation_id in followed:
            mark = marks.get(conversation_id)
            followers = self._followers.get(conversation_id)
            if followers is None or (conversation_id in self._marks and self._marks[conversation_id] == mark):
                continue
            # A first mark wakes its streams too: something may have changed between a stream's own first
            # read and this poll.
            self._marks[conversation_id] = mark
            for changed in followers:
                changed.set()

    async def run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:  # noqa: BLE001 - a saturated or restarting database: the next poll tries again
                logger.warning("conversation watcher: poll failed", exc_info=True)
            await asyncio.sleep(self.poll_s)
