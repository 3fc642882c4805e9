"""Several vLLM replicas: a request goes only to a replica that serves its adapter, in turn, and around failures.

The replicas are stand-ins speaking vLLM's HTTP endpoints on real ports (tests/utils/fake_vllm.py), so the
real langchain client, httpx and the promotion loader are what is tested.
"""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

from bot.llm import LLMUnavailable, ModelBusy, ReplyDone, VLLMChatModel
from bot.replicas import ReplicaPool, expand_urls, first_healthy
from bot.vllm_admin import load_adapter_into_vllm
from tests.utils.fake_vllm import FakeVLLM
from tests.utils.ports import free_port


@pytest.fixture
def replicas() -> Iterator[list[FakeVLLM]]:
    fakes = [FakeVLLM(f"replica-{index}").start() for index in range(3)]
    yield fakes
    for fake in fakes:
        fake.stop()


@pytest.fixture
def adapter(tmp_path: Path) -> Path:
    path = tmp_path / "adapters" / "domain-v1"
    path.mkdir(parents=True)
    return path


async def ask(llm: VLLMChatModel, model: str) -> tuple[str, ReplyDone]:
    pieces, done = [], None
    async for event in llm.stream([HumanMessage(content="Where is my order?")], model=model):
        if isinstance(event, ReplyDone):
            done = event
        else:
            pieces.append(event)
    assert done is not None
    return "".join(pieces), done


def pooled(fakes: list[FakeVLLM], refresh_s: float = 60) -> VLLMChatModel:
    return VLLMChatModel(
        replicas=ReplicaPool([fake.url for fake in fakes], refresh_s=refresh_s), max_tokens=16, timeout_s=10
    )


# Each test runs in one event loop, as the app does: the HTTP clients keep connections per loop.


def test_requests_go_only_to_replicas_that_serve_the_adapter_in_turn(replicas, adapter) -> None:
    first, second, third = replicas
    load_adapter_into_vllm([first.url, second.url], "domain-v1", adapter)
    llm = pooled(replicas)

    async def scenario() -> None:
        answers = [await ask(llm, "domain-v1") for _ in range(6)]
        assert first.chats("domain-v1") == 3 and second.chats("domain-v1") == 3
        assert third.chats() == 0, "the replica without the adapter must never be asked for it"
        assert {text for text, _ in answers} == {"Answer from replica-0.", "Answer from replica-1."}
        assert answers[0][1] == ReplyDone(model="domain-v1", prompt_tokens=11, completion_tokens=3)
        # The base model is on every replica, so its requests spread over all three.
        for _ in range(3):
            await ask(llm, "base")
        assert [fake.chats("base") for fake in replicas] == [1, 1, 1]

    asyncio.run(scenario())


def test_an_adapter_nobody_serves_is_unavailable_and_a_newly_loaded_one_is_found(replicas, adapter) -> None:
    llm = pooled(replicas)

    async def scenario() -> None:
        with pytest.raises(LLMUnavailable, match="no vLLM replica serves domain-v1"):
            await ask(llm, "domain-v1")
        # Loaded after the client last looked: the next request that finds nobody re-reads the replicas.
        load_adapter_into_vllm([replicas[2].url], "domain-v1", adapter)
        llm.replicas._refreshed_at -= 5  # the forced re-read is rate-limited to once a second
        text, _ = await ask(llm, "domain-v1")
        assert text == "Answer from replica-2."

    asyncio.run(scenario())


def test_a_replica_that_went_down_is_skipped_and_marked(replicas, adapter) -> None:
    load_adapter_into_vllm([fake.url for fake in replicas], "domain-v1", adapter)
    llm = pooled(replicas)

    async def scenario() -> None:
        await ask(llm, "domain-v1")  # the client now has its view of the three replicas
        replicas[1].stop()
        texts = [(await ask(llm, "domain-v1"))[0] for _ in range(4)]
        assert "Answer from replica-1." not in texts and len(texts) == 4, "customers got answers from the others"
        assert llm.replicas.snapshot()[replicas[1].url].up is False

    asyncio.run(scenario())


def test_a_restarted_replica_without_the_adapter_gets_no_requests_for_it(replicas, adapter) -> None:
    load_adapter_into_vllm([fake.url for fake in replicas], "domain-v1", adapter)
    llm = pooled(replicas)

    async def scenario() -> None:
        await ask(llm, "domain-v1")
        replicas[0].stop()
        replicas[0].start()  # back, but it forgot its runtime-loaded adapters
        await llm.replicas.refresh()
        before = replicas[0].chats()
        for _ in range(4):
            await ask(llm, "domain-v1")
        assert replicas[0].chats() == before

    asyncio.run(scenario())


def test_one_url_is_used_directly_as_before(replicas) -> None:
    llm = VLLMChatModel(base_url=replicas[0].url + "/", max_tokens=16, timeout_s=10)
    assert llm.replicas.single and llm.base_url == replicas[0].url

    async def scenario() -> None:
        text, done = await ask(llm, "base")
        assert text == "Answer from replica-0." and done.model == "base"
        assert ("models", None) not in replicas[0].requests, "a single server is not probed before a request"
        with pytest.raises(LLMUnavailable):
            await ask(llm, "domain-v9")  # vLLM's 404 for an adapter it lacks, exactly as before

    asyncio.run(scenario())


def test_ping_is_true_while_any_replica_answers(replicas) -> None:
    llm = pooled(replicas)
    assert asyncio.run(llm.ping())
    for fake in replicas:
        fake.stop()
    assert not asyncio.run(llm.ping())


def test_loading_skips_unreachable_replicas_but_not_a_refusal(replicas, adapter, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    loaded = load_adapter_into_vllm([replicas[0].url, dead], "domain-v1", adapter)
    assert loaded == [replicas[0].url] and "domain-v1" in replicas[0].adapters
    # Loading again is fine: vLLM answers "already loaded".
    assert load_adapter_into_vllm([replicas[0].url], "domain-v1", adapter) == [replicas[0].url]
    with pytest.raises(RuntimeError, match="refused adapter domain-v2"):
        load_adapter_into_vllm([replicas[0].url, replicas[1].url], "domain-v2", tmp_path / "missing")
    with pytest.raises(RuntimeError, match="no vLLM replica reachable"):
        load_adapter_into_vllm([dead], "domain-v1", adapter)


def test_dns_entries_stand_for_every_address_of_the_name(replicas) -> None:
    port = replicas[0].port
    urls = expand_urls([f"dns+http://localhost:{port}", replicas[1].url + "/"])
    assert f"http://127.0.0.1:{port}" in urls and urls[-1] == replicas[1].url
    assert expand_urls(["dns+http://no-such-host.invalid:8000"]) == []
    # The worker evaluates on one replica that answers.
    assert first_healthy([f"http://127.0.0.1:{free_port()}", replicas[2].url]) == replicas[2].url


def test_a_reply_that_cannot_start_in_time_raises_model_busy_and_frees_its_slot() -> None:
    slow = FakeVLLM("slow", piece_delay_s=0.6).start()  # each reply: three pieces, 0.6 s apart
    llm = VLLMChatModel(base_url=slow.url, max_tokens=16, timeout_s=10, max_concurrent=1, start_within_s=1.0)

    async def scenario() -> None:
        first, second = await asyncio.gather(ask(llm, "base"), ask(llm, "base"), return_exceptions=True)
        # One slot: the first reply starts after 0.6 s and holds the slot 1.8 s; the second waits past 1 s.
        assert not isinstance(first, BaseException) and first[0] == "Answer from slow."
        assert isinstance(second, ModelBusy) and "slot" in str(second)
        slow.piece_delay_s = 1.5  # now the server itself is too slow to begin within the bound
        with pytest.raises(ModelBusy, match="did not start"):
            await ask(llm, "base")
        slow.piece_delay_s = 0.0
        assert (await ask(llm, "base"))[0] == "Answer from slow.", "a busy reply gives its slot back"

    try:
        asyncio.run(scenario())
    finally:
        slow.stop()


def test_a_reply_beyond_the_queue_bound_is_busy_at_once_and_the_queue_drains() -> None:
    slow = FakeVLLM("slow", piece_delay_s=0.5).start()  # each reply holds its slot for 1.5 s
    llm = VLLMChatModel(
        base_url=slow.url, max_tokens=16, timeout_s=10, max_concurrent=1, start_within_s=20.0, max_queued=1
    )

    async def timed(started: float) -> tuple[float, object]:
        try:
            result: object = await ask(llm, "base")
        except ModelBusy as error:
            result = error
        return asyncio.get_running_loop().time() - started, result

    async def scenario() -> None:
        started = asyncio.get_running_loop().time()
        (_, first), (_, second), (third_s, third) = await asyncio.gather(timed(started), timed(started), timed(started))
        # One generating, one waiting: the third would wait behind a full queue and is told so immediately,
        # long before the 20 s start bound, while the one that queued is answered in its turn.
        assert first == ("Answer from slow.", ReplyDone(model="base", prompt_tokens=11, completion_tokens=3))
        assert not isinstance(second, BaseException) and second[0] == "Answer from slow."
        assert isinstance(third, ModelBusy) and "wait for a generation slot" in str(third) and third_s < 0.5
        assert (await ask(llm, "base"))[0] == "Answer from slow.", "the queue is free again"

    try:
        asyncio.run(scenario())
    finally:
        slow.stop()


def test_a_routed_model_goes_to_its_own_server_and_falls_back_to_the_default_one(replicas) -> None:
    merged, lora = replicas[0], replicas[1]
    merged.base = "domain-v2"  # a merged model is served under the version's name, without LoRA
    lora.adapters["domain-v2"] = "/adapters/domain-v2"
    llm = VLLMChatModel(base_url=lora.url, max_tokens=16, timeout_s=10)

    async def scenario() -> None:
        llm.route("domain-v2", merged.url + "/")
        assert llm.routes() == {"domain-v2": merged.url}
        text, done = await ask(llm, "domain-v2")
        assert text == "Answer from replica-0." and done.model == "domain-v2"
        assert (await ask(llm, "base"))[0] == "Answer from replica-1.", "other models stay on the default server"

        # While a reply streams, its server counts it; the count drops when the reply is done.
        stream = llm.stream([HumanMessage(content="Hi")], model="domain-v2")
        assert await anext(stream) == "Answer from "
        assert llm.in_flight(merged.url) == 1 and llm.in_flight(lora.url) == 0
        assert [event async for event in stream][-1].model == "domain-v2"
        assert llm.in_flight(merged.url) == 0

        merged.stop()  # the merged server crashed: the same version answers through LoRA
        text, done = await ask(llm, "domain-v2")
        assert text == "Answer from replica-1." and done.model == "domain-v2"
        llm.route("domain-v2", None)
        assert llm.routes() == {}

    asyncio.run(scenario())
