"""Load benchmark: N customers at once, each keeping its event stream open and sending T messages in turn.

Reports HTTP status counts per route, failed and "busy" replies, customer messages missing from the
transcripts, and latency p50/p95. Starts the app itself on SQLite or a private PostgreSQL, or targets a running one.
"""

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.bench_serving import percentile, question, sse_events  # noqa: E402

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
    replies: Counter = field(default_factory=Counter)  # answered / busy / failed / none
    streamed_ids: set[int] = field(default_factory=set)  # message ids the event stream delivered
    missing: list[str] = field(default_factory=list)  # confirmed texts absent from the transcript
    unanswered: int = 0  # stored customer messages with no bot or staff message after them
    not_streamed: int = 0  # transcript messages the event stream never delivered


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
        cursor = max(customer.streamed_ids, default=0)
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
                            customer.streamed_ids.add(json.loads(data)["id"])
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
        if reply is None:
            customer.replies["none"] += 1
        elif reply.get("decision") == "busy":
            customer.replies["busy"] += 1
        elif reply.get("failed"):
            customer.replies["failed"] += 1
        else:
            customer.replies["answered"] += 1
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
    customer.not_streamed = sum(1 for message in messages if message["id"] not in customer.streamed_ids)


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
    # Let the stream catch up (it polls), as a customer keeps the page open after the last reply.
    await asyncio.sleep(hold_s)
    following.cancel()
    await asyncio.gather(following, return_exceptions=True)
    await check_transcript(client, run, customer, conversation_id, token)
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
    open_s = [customer.open_s for customer in customers if customer.open_s is not None]
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
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def started_app(args: argparse.Namespace, database_url: str, vllm_url: str | None, log_path: Path) -> Iterator[str]:
    """`supportbot start` on `database_url`, as a user runs it, with the rate limits out of the way."""
    port = free_port()
    env = {
        **os.environ,
        "SUPPORTBOT_DATA_DIR": str(args.data_dir),
        "SUPPORTBOT_DATABASE_URL": database_url,
        "SUPPORTBOT_PORT": str(port),
        "SUPPORTBOT_VLLM_PORT": str(free_port()),
        "SUPPORTBOT_RATE_LIMIT_PER_MINUTE_ADDRESS": "1000000",
        "SUPPORTBOT_RATE_LIMIT_PER_MINUTE_CONVERSATION": "1000",
        "SUPPORTBOT_RETENTION_EVERY_HOURS": "0",
    }
    if vllm_url:
        env["SUPPORTBOT_VLLM_URL"] = vllm_url
    for pair in args.env:
        name, _, value = pair.partition("=")
        env[name] = value
    # A stand-in model needs no prepared adapter; a real one gets what `supportbot start` prepares.
    command = [sys.executable, "-m", "serving.cli", "start"]
    if args.fake_model_delay_s is not None:
        command.append("--skip-prepare")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + args.start_timeout_s
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the app exited with {process.returncode}; see {log_path}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the app did not become ready; see {log_path}")
            time.sleep(1)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def database_for(kind: str, stack: ExitStack, workdir: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{workdir / 'load.db'}"
    from tests.utils.postgres import PostgresServer

    server = PostgresServer.start()
    stack.callback(server.stop)
    return server.url(server.create_database())


def model_url(args: argparse.Namespace, stack: ExitStack) -> str | None:
    if args.fake_model_delay_s is None:
        return args.vllm_url
    from tests.utils.fake_vllm import FakeVLLM

    fake = FakeVLLM("fake", piece_delay_s=args.fake_model_delay_s).start()
    stack.callback(fake.stop)
    return fake.url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--conversations", type=int, default=100, help="customers arriving at the same moment")
    parser.add_argument("--turns", type=int, default=10, help="messages each customer sends, one after another")
    parser.add_argument("--hold-s", type=float, default=3.0, help="event streams stay open this long after the end")
    parser.add_argument("--app", help="a running app's URL; without it the benchmark starts one")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "var", help="the started app's data directory")
    parser.add_argument("--vllm-url", help="a running vLLM for the started app (default: the app starts its own)")
    parser.add_argument(
        "--fake-model-delay-s",
        type=float,
        help="serve replies from a stand-in model (tests/utils/fake_vllm.py) waiting this long per piece",
    )
    parser.add_argument("--env", action="append", default=[], help="extra NAME=VALUE for the started app")
    parser.add_argument("--start-timeout-s", type=float, default=900.0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    with ExitStack() as stack:
        if args.app:
            app = args.app.rstrip("/")
        else:
            workdir = Path(stack.enter_context(_tempdir()))
            url = database_for(args.database, stack, workdir)
            log_path = args.data_dir / "logs" / f"bench-load-{args.database}.log"
            app = stack.enter_context(started_app(args, url, model_url(args, stack), log_path))
            print(f"app log: {log_path}")
        print(f"{args.conversations} conversations x {args.turns} turns against {app} ({args.database})", flush=True)
        run, customers, wall = asyncio.run(run_load(app, args.conversations, args.turns, args.hold_s))
    results = {"conversations": args.conversations, "turns": args.turns, "database": args.database}
    results |= report(run, customers, wall)
    for name, value in results.items():
        print(f"{name:22} {value:.2f}" if isinstance(value, float) else f"{name:22} {value}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **results}, indent=2))


@contextmanager
def _tempdir() -> Iterator[str]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="supportbot-load-") as folder:
        yield folder


if __name__ == "__main__":
    main()
