"""Simulated customers for load runs: each opens a conversation, keeps its event stream open as the widget
does and sends messages one after another, re-sending after Retry-After when told to wait (429/503).

Used by tests/bench/bench_load.py and tests/serving/test_load.py; `report` sums up what they saw.
"""

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from tests.bench.bench_serving import percentile, question, sse_events

# A customer who is told to wait sends again after Retry-After, at most this many times per message.
MAX_ATTEMPTS = 30
# What the widget does when its event stream drops: reconnect after 1 s, doubling up to 15 s.
RECONNECT_S, MAX_RECONNECT_S = 1.0, 15.0


@dataclass
class Customer:
    """What one simulated customer saw."""

    index: int
    opened: bool = False
    open_s: float | None = None
    sent: list[str] = field(default_factory=list)  # texts the app confirmed as stored
    given_up: list[str] = field(default_factory=list)  # texts never accepted after MAX_ATTEMPTS
    reply_s: list[float] = field(default_factory=list)
    answered_s: list[float] = field(default_factory=list)  # the replies the model wrote
    replies: Counter = field(default_factory=Counter)  # answered / busy / failed / none
    streamed_at: dict[int, float] = field(default_factory=dict)  # message id -> when the event stream brought it
    replied_at: dict[int, float] = field(default_factory=dict)  # bot message id -> when its reply stream ended
    transcript_ids: set[int] = field(default_factory=set)
    missing: list[str] = field(default_factory=list)  # confirmed texts absent from the transcript
    unanswered: int = 0  # stored customer messages with no bot or staff message after them
    not_streamed: int = 0  # transcript messages the event stream had not delivered by the end


class Run:
    """Shared counters of one benchmark run."""

    def __init__(self) -> None:
        self.statuses: Counter = Counter()  # (route, status or error name)

    def count(self, route: str, outcome: int | str) -> None:
        self.statuses[(route, str(outcome))] += 1


def retry_after(response: httpx.Response) -> float:
    try:
        return max(0.5, float(response.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


async def open_conversation(client: httpx.AsyncClient, run: Run, customer: Customer) -> tuple[str, str] | None:
    started = time.perf_counter()
    for _ in range(MAX_ATTEMPTS):
        try:
            response = await client.post("/api/conversations", json={"channel": "web"})
        except httpx.HTTPError as error:
            run.count("open", type(error).__name__)
            await asyncio.sleep(1.0)
            continue
        run.count("open", response.status_code)
        if response.status_code == 201:
            body = response.json()
            customer.opened, customer.open_s = True, time.perf_counter() - started
            return body["conversation"]["id"], body["token"]
        if response.status_code in (429, 503):
            await asyncio.sleep(retry_after(response))
            continue
        return None
    return None


async def follow(client: httpx.AsyncClient, run: Run, customer: Customer, conversation_id: str, token: str) -> None:
    """The widget's live stream: reconnect with the last message id whenever it ends or fails."""
    delay = RECONNECT_S
    while True:
        cursor = max(customer.streamed_at, default=0)
        try:
            async with client.stream(
                "GET",
                f"/api/conversations/{conversation_id}/events",
                params={"after": cursor},
                headers={"Authorization": f"Bearer {token}"},
            ) as response:
                run.count("events", response.status_code)
                if response.status_code == 200:
                    delay = RECONNECT_S
                    async for event, data in sse_events(response):
                        if event == "message":
                            customer.streamed_at.setdefault(json.loads(data)["id"], time.perf_counter())
                else:
                    await response.aread()
                    if response.status_code in (401, 403, 404):
                        return
        except httpx.HTTPError as error:
            run.count("events", type(error).__name__)
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_RECONNECT_S)


async def send(
    client: httpx.AsyncClient, run: Run, customer: Customer, conversation_id: str, token: str, text: str
) -> None:
    """Send one message as the widget does; on 429/503 the text stays in the box and is sent again."""
    for _ in range(MAX_ATTEMPTS):
        started = time.perf_counter()
        stored = False
        try:
            async with client.stream(
                "POST",
                f"/api/conversations/{conversation_id}/messages",
                json={"text": text},
                headers={"Authorization": f"Bearer {token}"},
            ) as response:
                run.count("send", response.status_code)
                if response.status_code in (429, 503):
                    await response.aread()
                    await asyncio.sleep(retry_after(response))
                    continue
                if response.status_code != 200:
                    await response.aread()
                    customer.given_up.append(text)
                    return
                reply = None
                async for event, data in sse_events(response):
                    if event == "customer_message":
                        stored = True
                        customer.sent.append(text)
                    elif event == "bot_message":
                        reply = json.loads(data)
                    elif event == "done":
                        break
        except httpx.HTTPError as error:
            run.count("send", type(error).__name__)
            if stored:
                customer.replies["none"] += 1
                return
            await asyncio.sleep(1.0)
            continue
        customer.reply_s.append(time.perf_counter() - started)
        if reply is not None:
            customer.replied_at[reply["id"]] = time.perf_counter()
        if reply is None:
            customer.replies["none"] += 1
        elif reply.get("decision") == "busy":
            customer.replies["busy"] += 1
        elif reply.get("failed"):
            customer.replies["failed"] += 1
        else:
            customer.replies["answered"] += 1
            customer.answered_s.append(customer.reply_s[-1])
        return
    customer.given_up.append(text)


async def check_transcript(
    client: httpx.AsyncClient, run: Run, customer: Customer, conversation_id: str, token: str
) -> None:
    response = await client.get(f"/api/conversations/{conversation_id}", headers={"Authorization": f"Bearer {token}"})
    run.count("transcript", response.status_code)
    if response.status_code != 200:
        customer.missing = list(customer.sent)
        return
    messages = response.json()["messages"]
    stored = [message["text"] for message in messages if message["role"] == "customer"]
    customer.missing = [text for text in customer.sent if text not in stored]
    for position, message in enumerate(messages):
        if message["role"] == "customer" and not any(later["role"] != "customer" for later in messages[position + 1 :]):
            customer.unanswered += 1
    customer.transcript_ids = {message["id"] for message in messages}


async def one_customer(
    client: httpx.AsyncClient, run: Run, index: int, turns: int, hold_s: float, start: asyncio.Event
) -> Customer:
    customer = Customer(index)
    await start.wait()
    opened = await open_conversation(client, run, customer)
    if opened is None:
        return customer
    conversation_id, token = opened
    following = asyncio.create_task(follow(client, run, customer, conversation_id, token))
    for turn in range(turns):
        # Each text is unique, so a lost message cannot hide behind an identical one.
        text = f"{question(index, turn, turns)} (#{index}.{turn})"
        await send(client, run, customer, conversation_id, token, text)
    await check_transcript(client, run, customer, conversation_id, token)
    # The customer keeps the page open: give the event stream up to `hold_s` to bring every stored message.
    deadline = time.perf_counter() + hold_s
    while customer.transcript_ids - customer.streamed_at.keys() and time.perf_counter() < deadline:
        await asyncio.sleep(0.2)
    customer.not_streamed = len(customer.transcript_ids - customer.streamed_at.keys())
    following.cancel()
    await asyncio.gather(following, return_exceptions=True)
    return customer


async def run_load(app: str, conversations: int, turns: int, hold_s: float) -> tuple[Run, list[Customer], float]:
    run = Run()
    # HTTP/1.1: one connection per open stream, two streams per customer (events + a reply).
    limits = httpx.Limits(max_connections=2 * conversations + 10, max_keepalive_connections=2 * conversations + 10)
    timeout = httpx.Timeout(connect=60.0, read=600.0, write=60.0, pool=600.0)
    start = asyncio.Event()
    async with httpx.AsyncClient(base_url=app, limits=limits, timeout=timeout) as client:
        tasks = [asyncio.create_task(one_customer(client, run, i, turns, hold_s, start)) for i in range(conversations)]
        await asyncio.sleep(0.1)
        began = time.perf_counter()
        start.set()  # everyone at the same moment
        customers = await asyncio.gather(*tasks)
        wall = time.perf_counter() - began
    return run, list(customers), wall


def report(run: Run, customers: list[Customer], wall: float) -> dict:
    replies: Counter = Counter()
    for customer in customers:
        replies.update(customer.replies)
    reply_s = [seconds for customer in customers for seconds in customer.reply_s]
    answered_s = [seconds for customer in customers for seconds in customer.answered_s]
    open_s = [customer.open_s for customer in customers if customer.open_s is not None]
    # How much later than the reply stream the event stream brought the same bot message.
    event_lag_s = [
        customer.streamed_at[message_id] - replied
        for customer in customers
        for message_id, replied in customer.replied_at.items()
        if message_id in customer.streamed_at
    ]
    statuses = {f"{route} {status}": count for (route, status), count in sorted(run.statuses.items())}
    return {
        "wall_s": round(wall, 1),
        "conversations_opened": sum(customer.opened for customer in customers),
        "http": statuses,
        "http_5xx": sum(count for (_, status), count in run.statuses.items() if status.startswith("5")),
        "messages_stored": sum(len(customer.sent) for customer in customers),
        "messages_given_up": sum(len(customer.given_up) for customer in customers),
        "messages_lost": sum(len(customer.missing) for customer in customers),
        "unanswered": sum(customer.unanswered for customer in customers),
        "replies": dict(replies),
        "not_streamed": sum(customer.not_streamed for customer in customers),
        "open_p50_s": percentile(open_s, 50),
        "open_p95_s": percentile(open_s, 95),
        "reply_p50_s": percentile(reply_s, 50),
        "reply_p95_s": percentile(reply_s, 95),
        "answered_p50_s": percentile(answered_s, 50),
        "answered_p95_s": percentile(answered_s, 95),
        "event_lag_p50_s": percentile(event_lag_s, 50),
        "event_lag_p95_s": percentile(event_lag_s, 95),
    }
