"""The chat model the dialogue manager talks to: vLLM's OpenAI-compatible server through langchain.

A reply streams as text pieces followed by one `ReplyDone` with the served model name and token usage.
With several vLLM replicas, each request goes to one whose /v1/models lists the model it asks for.
"""

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import httpx
import openai
from langchain_core.messages import BaseMessage
from langchain_openai import ChatOpenAI

from bot.replicas import ReplicaPool

logger = logging.getLogger(__name__)


class LLMUnavailable(Exception):
    """The model server could not be reached or failed while answering."""


class ModelBusy(LLMUnavailable):
    """The reply did not start in time: every generation slot stayed taken, or the server was slow to begin."""


@dataclass(frozen=True)
class ReplyDone:
    """Closing event of a streamed reply."""

    model: str
    prompt_tokens: int | None
    completion_tokens: int | None


class ChatModel(ABC):
    """Streams a reply to a list of chat messages from the named served model (adapter)."""

    @abstractmethod
    def stream(self, messages: Sequence[BaseMessage], *, model: str) -> AsyncIterator[str | ReplyDone]: ...


class VLLMChatModel(ChatModel):
    """langchain's `ChatOpenAI` pointed at a vLLM server (or a pool of replicas); one client per model and server.

    With one server every request goes to it, as it always did. With a pool, a request goes to a replica
    that lists its model, in turn; a replica that cannot be reached before the reply starts is marked
    down and the next one is tried.

    At most `max_concurrent` replies are generated at once; the rest wait here, in order, rather than pile
    up in vLLM where every one slows down. A reply that has not started `start_within_s` after it was asked
    for (slot wait included) raises `ModelBusy`, and vLLM drops the request; so does one that would wait
    behind `max_queued` others already waiting, at once (its customer gets the busy notice now, not later).

    `route(model, url)` sends a model's requests to a server of its own first (the promoted version merged
    into the base weights); one that cannot be reached before the reply starts falls back to the default
    server, which serves the same version as a LoRA adapter. `in_flight(url)` counts the replies a server
    is still generating, so a replaced one is stopped only once they have finished.
    """

    def __init__(
        self,
        *,
        max_tokens: int,
        timeout_s: float,
        base_url: str | None = None,
        replicas: ReplicaPool | None = None,
        temperature: float = 0.3,
        max_concurrent: int = 64,
        start_within_s: float | None = None,
        max_queued: int | None = None,
    ) -> None:
        if replicas is None:
            if base_url is None:
                raise ValueError("give base_url or replicas")
            replicas = ReplicaPool([base_url])
        self.replicas = replicas
        self.base_url = replicas.urls[0]
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.temperature = temperature
        self._clients: dict[tuple[str, str, asyncio.AbstractEventLoop], ChatOpenAI] = {}
        self.start_within_s = start_within_s
        self._slots = asyncio.Semaphore(max_concurrent)
        self.max_queued = max_queued
        self._waiting = 0
        self._routes: dict[str, str] = {}
        self._served_as: dict[str, str] = {}
        self._in_flight: dict[str, int] = {}

    def route(self, model: str, url: str | None, *, served_as: str | None = None) -> None:
        """Send `model`'s new requests to `url` first (None: back to the default server), asking that server for
        `served_as` when it serves the model under another name (a merged server whose weights were reloaded
        keeps its name); replies already streaming finish where they started. Replies still name `model`."""
        if url is None:
            self._routes.pop(model, None)
            self._served_as.pop(model, None)
        else:
            self._routes[model] = url.rstrip("/")
            self._served_as[model] = served_as or model

    def routes(self) -> dict[str, str]:
        return dict(self._routes)

    def in_flight(self, url: str) -> int:
        """Replies being generated on the server at `url` right now."""
        return self._in_flight.get(url.rstrip("/"), 0)

    def _client(self, model: str, base_url: str | None = None) -> ChatOpenAI:
        # One HTTP client per event loop: langchain-openai otherwise shares one process-wide client whose pooled
        # connections belong to whichever loop opened them, and reusing them from another loop fails with
        # "Event loop is closed" (several apps or test clients in one process).
        loop = asyncio.get_running_loop()
        key = (base_url or self.base_url, model, loop)
        if key not in self._clients:
            self._clients[key] = ChatOpenAI(
                http_async_client=httpx.AsyncClient(timeout=self.timeout_s),
                base_url=f"{key[0]}/v1",
                api_key="unused",
                model=model,
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                timeout=self.timeout_s,
                max_retries=0,
                stream_usage=True,
            )
        return self._clients[key]

    async def stream(self, messages: Sequence[BaseMessage], *, model: str) -> AsyncIterator[str | ReplyDone]:
        loop = asyncio.get_running_loop()
        start_by = None if self.start_within_s is None else loop.time() + self.start_within_s
        if self.max_queued is not None and self._slots.locked() and self._waiting >= self.max_queued:
            raise ModelBusy(f"{self._waiting} replies already wait for a generation slot")
        self._waiting += 1
        try:
            async with asyncio.timeout_at(start_by):
                await self._slots.acquire()
        except TimeoutError:
            raise ModelBusy(f"no generation slot came free within {self.start_within_s:g} s") from None
        finally:
            self._waiting -= 1
        try:
            async for event in self._stream(messages, model=model, start_by=start_by):
                yield event
        finally:
            self._slots.release()

    async def _stream(
        self, messages: Sequence[BaseMessage], *, model: str, start_by: float | None
    ) -> AsyncIterator[str | ReplyDone]:
        if model in self._routes:
            # The default server (a replica pool is never routed) keeps the same version as a LoRA adapter.
            targets = [self._routes[model], self.base_url]
        elif self.replicas.single:
            targets = [self.base_url]
        else:
            targets = await self.replicas.serving(model)
            if not targets:
                logger.warning("model %s failed: no vLLM replica serves it", model)
                raise LLMUnavailable(f"no vLLM replica serves {model}")
        for attempt, url in enumerate(targets, start=1):
            served = model
            # A routed server may serve the model under its own name; the reply is the model's all the same.
            asked = self._served_as.get(model, model) if url == self._routes.get(model) else model
            usage: dict = {}
            started = False
            self._in_flight[url] = self._in_flight.get(url, 0) + 1
            try:
                # Only the wait for the first piece is bounded; the deadline is off before anything is yielded.
                async with asyncio.timeout_at(start_by) as deadline:
                    async for chunk in self._client(asked, url).astream(list(messages)):
                        if chunk.content:
                            if deadline.when() is not None:
                                if deadline.expired():
                                    continue  # its cancellation is on the way: this reply came too late
                                deadline.reschedule(None)
                            started = True
                            yield str(chunk.content)
                        if asked == model:
                            served = chunk.response_metadata.get("model_name", served)
                        usage = chunk.usage_metadata or usage
            except TimeoutError:
                raise ModelBusy(f"the reply did not start within {self.start_within_s:g} s") from None
            except (openai.APIError, httpx.HTTPError) as error:
                logger.warning("model %s failed on %s: %s", model, url, error)
                if _replica_fault(error) and not self.replicas.single:
                    self.replicas.mark_failed(url, str(error))
                if started or attempt == len(targets) or not _replica_fault(error):
                    raise LLMUnavailable(str(error)) from error
                continue
            finally:
                self._in_flight[url] -= 1
            yield ReplyDone(
                model=served, prompt_tokens=usage.get("input_tokens"), completion_tokens=usage.get("output_tokens")
            )
            return

    async def ping(self) -> bool:
        """True when the server (with replicas: at least one of them) answers its health check."""
        if not self.replicas.single:
            return any(replica.up for replica in (await self.replicas.refresh()).values())
        try:
            async with httpx.AsyncClient(timeout=3) as client:
                return (await client.get(f"{self.base_url}/health")).status_code == 200
        except httpx.HTTPError:
            return False


def _replica_fault(error: Exception) -> bool:
    """Errors that say this replica cannot answer (down, overloaded, lacks the model), not that the request is bad.

    A timeout is not retried elsewhere: the customer has already waited the whole timeout once.
    """
    if isinstance(error, openai.APITimeoutError):
        return False
    return isinstance(
        error, openai.APIConnectionError | openai.InternalServerError | openai.NotFoundError | httpx.TransportError
    )
