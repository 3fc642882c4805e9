"""The chat model the dialogue manager talks to: vLLM's OpenAI-compatible server through langchain.

A reply streams as text pieces followed by one `ReplyDone` with the served model name and token usage.
"""

import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import httpx
import openai
from langchain_core.messages import BaseMessage
from langchain_openai import ChatOpenAI

logger = logging.getLogger(__name__)


class LLMUnavailable(Exception):
    """The model server could not be reached or failed while answering."""


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
    """langchain's `ChatOpenAI` pointed at a vLLM server; one client per served model name."""

    def __init__(self, *, base_url: str, max_tokens: int, timeout_s: float, temperature: float = 0.3) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.temperature = temperature
        self._clients: dict[str, ChatOpenAI] = {}

    def _client(self, model: str) -> ChatOpenAI:
        if model not in self._clients:
            self._clients[model] = ChatOpenAI(
                base_url=f"{self.base_url}/v1",
                api_key="unused",
                model=model,
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                timeout=self.timeout_s,
                max_retries=0,
                stream_usage=True,
            )
        return self._clients[model]

    async def stream(self, messages: Sequence[BaseMessage], *, model: str) -> AsyncIterator[str | ReplyDone]:
        served = model
        usage: dict = {}
        try:
            async for chunk in self._client(model).astream(list(messages)):
                if chunk.content:
                    yield str(chunk.content)
                served = chunk.response_metadata.get("model_name", served)
                usage = chunk.usage_metadata or usage
        except (openai.APIError, httpx.HTTPError) as error:
            logger.warning("model %s failed: %s", model, error)
            raise LLMUnavailable(str(error)) from error
        yield ReplyDone(
            model=served, prompt_tokens=usage.get("input_tokens"), completion_tokens=usage.get("output_tokens")
        )

    async def ping(self) -> bool:
        """True when the server answers its health check."""
        try:
            async with httpx.AsyncClient(timeout=3) as client:
                return (await client.get(f"{self.base_url}/health")).status_code == 200
        except httpx.HTTPError:
            return False
