"""Replica routing against the real vLLM server of the test session, beside a stand-in replica that lacks the
adapter: the real server's /v1/models is what routing reads, and it alone is asked for the adapter.
"""

import asyncio

import httpx
from langchain_core.messages import HumanMessage

from bot.llm import ReplyDone, VLLMChatModel
from bot.replicas import ReplicaPool
from bot.vllm_admin import load_adapter_into_vllm
from runtime.registry import AdapterRegistry
from tests.conftest import LiveApp
from tests.utils.fake_vllm import FakeVLLM


def test_only_the_real_replica_with_the_adapter_answers_for_it(live_app: LiveApp) -> None:
    real = live_app.settings.resolved_vllm_url
    registry = AdapterRegistry(live_app.settings.adapters_dir)
    adapter = registry.active()
    assert adapter is not None
    served = {model["id"] for model in httpx.get(f"{real}/v1/models", timeout=10).json()["data"]}
    assert {"base", adapter} <= served, "vLLM lists the base model and the loaded adapter by name"

    stand_in = FakeVLLM("stand-in").start()
    try:
        llm = VLLMChatModel(replicas=ReplicaPool([real, stand_in.url], refresh_s=60), max_tokens=8, timeout_s=120)

        async def scenario() -> list[ReplyDone]:
            done = []
            for _ in range(3):
                async for event in llm.stream([HumanMessage(content="Hi, can I return a lamp?")], model=adapter):
                    if isinstance(event, ReplyDone):
                        done.append(event)
            return done

        replies = asyncio.run(scenario())
        assert [reply.model for reply in replies] == [adapter] * 3
        assert stand_in.chats() == 0, "the replica without the adapter was never asked"
        # Promotion-style loading reaches both; loading again into the real server is accepted.
        loaded = load_adapter_into_vllm([real, stand_in.url], adapter, registry.path(adapter))
        assert loaded == [real, stand_in.url] and adapter in stand_in.adapters
    finally:
        stand_in.stop()
