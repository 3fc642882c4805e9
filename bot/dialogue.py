"""The dialogue manager: turns a conversation's history into the next bot reply.

It chooses what the model sees, which served model (adapter) answers, and streams the answer.
"""

import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from bot.context import Prompt, TokenCounter, Turn, fit_recent_turns, relevant_policies, system_text
from bot.domain import DomainPack
from bot.llm import ChatModel, ReplyDone

logger = logging.getLogger(__name__)


class ModelSelector:
    """The served model name the bot answers with; swapped atomically when an adapter is promoted."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()

    def current(self) -> str:
        with self._lock:
            return self._name

    def switch(self, name: str) -> None:
        with self._lock:
            self._name = name


@dataclass(frozen=True)
class ReplyStarted:
    """First event of a reply: what was sent to which model."""

    model: str
    prompt: Prompt


@dataclass(frozen=True)
class ReplyFinished:
    """Last event of a reply, with its measurements."""

    model: str
    prompt_tokens: int
    completion_tokens: int | None
    first_token_ms: float | None
    latency_ms: float


def to_langchain(messages: Sequence[dict[str, str]]) -> list[BaseMessage]:
    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    return [kinds[message["role"]](content=message["content"]) for message in messages]


class DialogueManager:
    """Builds the prompt for a conversation and streams the model's reply."""

    def __init__(
        self,
        *,
        pack: DomainPack,
        llm: ChatModel,
        counter: TokenCounter,
        models: ModelSelector,
        context_tokens: int,
        reply_tokens: int,
    ) -> None:
        self.pack = pack
        self.llm = llm
        self.counter = counter
        self.models = models
        self.prompt_budget = context_tokens - reply_tokens

    def build_prompt(self, turns: Sequence[Turn]) -> Prompt:
        latest = next((turn.text for turn in reversed(turns) if turn.role == "customer"), "")
        system = system_text(self.pack, relevant_policies(self.pack, latest))
        return fit_recent_turns(system=system, turns=turns, budget=self.prompt_budget, counter=self.counter)

    async def reply(self, turns: Sequence[Turn]) -> AsyncIterator[str | ReplyStarted | ReplyFinished]:
        """Stream the next bot reply: a `ReplyStarted`, text pieces, then a `ReplyFinished`.

        Raises `bot.llm.LLMUnavailable` when the model cannot answer.
        """
        started = time.perf_counter()
        model = self.models.current()
        prompt = self.build_prompt(turns)
        yield ReplyStarted(model=model, prompt=prompt)
        first_token_ms: float | None = None
        async for event in self.llm.stream(to_langchain(prompt.messages), model=model):
            if isinstance(event, ReplyDone):
                yield ReplyFinished(
                    model=event.model,
                    prompt_tokens=event.prompt_tokens or prompt.tokens,
                    completion_tokens=event.completion_tokens,
                    first_token_ms=first_token_ms,
                    latency_ms=round((time.perf_counter() - started) * 1000, 1),
                )
                return
            if first_token_ms is None:
                first_token_ms = round((time.perf_counter() - started) * 1000, 1)
            yield event
