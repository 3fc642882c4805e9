"""Serving benchmark: N concurrent multi-turn conversations through the app, then straight to vLLM.

Prints replies/s, tokens/s, time to first token, reply latency and failures for the app, for a raw vLLM with this
CPU's best settings serving the promoted version merged (the "limit" row), and for the app's runtime-LoRA vLLM;
`--switch` times a promotion and a rollback under traffic.
"""

import argparse
import asyncio
import json
import math
import os
import re
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# Varied on purpose: with one repeated question the prefix cache would make every row look fast.
QUESTIONS = [
    "Hi, how long do I have to return an item I bought last week?",
    "Where is my order {order}? It was supposed to arrive yesterday.",
    "The lamp in order {order} arrived damaged. Can I get a refund?",
    "How much does standard shipping cost to Canada?",
    "My package shows delivered but I never got it. Order {order}. What now?",
    "Do you offer express shipping, and how fast is it?",
    "I was charged twice for order {order}. Can you fix that?",
    "Can I change the delivery address of order {order}?",
    "The kettle from order {order} doesn't turn on. Is it under warranty?",
    "How do I cancel my order {order} before it ships?",
    "Do you price match if I find the same blanket cheaper elsewhere?",
    "When will the refund for order {order} show up on my credit card?",
    "Can I return a gift without the receipt?",
    "Is there a restocking fee for opened electronics?",
    "I got the wrong color rug in order {order}. Can you exchange it?",
    "Do you ship to PO boxes?",
    "What payment methods do you accept?",
    "How do I reset the password of my account?",
    "My discount code didn't apply at checkout. Can you still honor it?",
    "I sent back order {order} two weeks ago. Where is my refund?",
]
# The app adds its own, longer system text; this keeps the vLLM rows' prompts in the same range.
SYSTEM_PROMPT = (
    "You are the customer support assistant for Lumen & Loom, an online shop for home goods and small "
    "electronics. Reply in one to three short, polite sentences. Never invent order details; ask for the "
    "order number when a question is about a specific order."
)
TEMPERATURE = 0.3  # the app's own sampling temperature


@dataclass
class Reply:
    """One measured bot reply."""

    ok: bool
    completion_tokens: int = 0
    prompt_tokens: int | None = None
    ttft_s: float | None = None
    latency_s: float | None = None
    model: str | None = None
    error: str | None = None
    text: str = ""
    message_id: int | None = None


@dataclass
class Row:
    """One target at one concurrency, summarised."""

    target: str
    concurrency: int
    replies: int
    failures: int
    completion_tokens: int
    wall_s: float
    tokens_per_s: float
    replies_per_s: float
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    latency_p50_s: float | None
    latency_p95_s: float | None
    prompt_tokens_mean: float | None
    reply_tokens_mean: float | None
    models: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class SSEParser:
    """Turns server-sent-event lines into (event, data) pairs; an event ends at a blank line."""

    def __init__(self) -> None:
        self.event = "message"
        self.data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        line = line.rstrip("\r\n")
        if not line:
            if not self.data:
                self.event = "message"
                return None
            done = (self.event, "\n".join(self.data))
            self.event, self.data = "message", []
            return done
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        return None

    def flush(self) -> tuple[str, str] | None:
        """The last event when the stream ended without a trailing blank line."""
        return self.feed("")


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    parser = SSEParser()
    async for line in response.aiter_lines():
        if (event := parser.feed(line)) is not None:
            yield event
    if (event := parser.flush()) is not None:
        yield event


def question(conversation: int, turn: int, turns: int) -> str:
    text = QUESTIONS[(conversation * turns + turn) % len(QUESTIONS)]
    return text.format(order=f"LL-{104233 + conversation}")


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile, q in [0, 100]."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarise(target: str, concurrency: int, replies: Sequence[Reply], wall_s: float) -> Row:
    good = [r for r in replies if r.ok]
    tokens = sum(r.completion_tokens for r in replies)
    ttfts = [r.ttft_s for r in good if r.ttft_s is not None]
    latencies = [r.latency_s for r in good if r.latency_s is not None]
    prompts = [r.prompt_tokens for r in good if r.prompt_tokens is not None]
    errors = sorted({r.error for r in replies if r.error})
    return Row(
        target=target,
        concurrency=concurrency,
        replies=len(replies),
        failures=len(replies) - len(good),
        completion_tokens=tokens,
        wall_s=wall_s,
        tokens_per_s=tokens / wall_s if wall_s > 0 else 0.0,
        replies_per_s=len(good) / wall_s if wall_s > 0 else 0.0,
        ttft_p50_s=percentile(ttfts, 50),
        ttft_p95_s=percentile(ttfts, 95),
        latency_p50_s=percentile(latencies, 50),
        latency_p95_s=percentile(latencies, 95),
        prompt_tokens_mean=sum(prompts) / len(prompts) if prompts else None,
        reply_tokens_mean=sum(r.completion_tokens for r in good) / len(good) if good else None,
        models=sorted({r.model for r in good if r.model}),
        errors=errors[:5],
    )


async def app_reply(client: httpx.AsyncClient, app: str, conversation_id: str, token: str, text: str) -> Reply:
    start = time.perf_counter()
    ttft: float | None = None
    stored: dict[str, Any] | None = None
    async with client.stream(
        "POST",
        f"{app}/api/conversations/{conversation_id}/messages",
        headers={"Authorization": f"Bearer {token}"},
        json={"text": text},
    ) as response:
        if response.status_code != 200:
            await response.aread()
            return Reply(ok=False, error=f"HTTP {response.status_code}: {response.text[:200]}")
        async for event, data in sse_events(response):
            if event == "token" and ttft is None and json.loads(data).get("text"):
                ttft = time.perf_counter() - start
            elif event == "bot_message":
                stored = json.loads(data)
            elif event == "done":
                break
    latency = time.perf_counter() - start
    if stored is None:
        return Reply(ok=False, ttft_s=ttft, latency_s=latency, error="stream ended without bot_message")
    reply = Reply(
        ok=not stored.get("failed") and ttft is not None,
        completion_tokens=stored.get("completion_tokens") or 0,
        prompt_tokens=stored.get("prompt_tokens"),
        ttft_s=ttft,
        latency_s=latency,
        model=stored.get("model"),
        text=stored.get("text") or "",
        message_id=stored.get("id"),
    )
    if stored.get("failed"):
        reply.error = f"bot_message failed: {stored.get('error') or stored.get('text', '')[:200]}"
    elif ttft is None:
        reply.error = "no token events"
    return reply


async def app_conversation(client: httpx.AsyncClient, app: str, index: int, turns: int) -> list[Reply]:
    try:
        opened = await client.post(f"{app}/api/conversations", json={"channel": "api"})
        opened.raise_for_status()
        body = opened.json()
        conversation_id, token = body["conversation"]["id"], body["token"]
    except (httpx.HTTPError, KeyError, ValueError) as error:
        return [Reply(ok=False, error=f"open conversation: {error!r}"[:200]) for _ in range(turns)]
    replies = []
    for turn in range(turns):
        try:
            replies.append(await app_reply(client, app, conversation_id, token, question(index, turn, turns)))
        except (httpx.HTTPError, ValueError) as error:
            replies.append(Reply(ok=False, error=f"{type(error).__name__}: {error}"[:200]))
    return replies


async def vllm_reply(
    client: httpx.AsyncClient,
    vllm: str,
    model: str,
    messages: list[dict[str, str]],
    max_tokens: int,
    cache_salt: str | None = None,
) -> Reply:
    payload: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": TEMPERATURE,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if cache_salt is not None:
        payload["cache_salt"] = cache_salt  # a request with its own salt shares no cached prefix with any other
    start = time.perf_counter()
    ttft: float | None = None
    usage: dict[str, Any] | None = None
    served: str | None = None
    pieces: list[str] = []
    async with client.stream("POST", f"{vllm}/v1/chat/completions", json=payload) as response:
        if response.status_code != 200:
            await response.aread()
            return Reply(ok=False, error=f"HTTP {response.status_code}: {response.text[:200]}")
        async for _, data in sse_events(response):
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            served = chunk.get("model", served)
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or []:
                if content := (choice.get("delta") or {}).get("content"):
                    if ttft is None:
                        ttft = time.perf_counter() - start
                    pieces.append(content)
    latency = time.perf_counter() - start
    if usage is None:
        return Reply(ok=False, ttft_s=ttft, latency_s=latency, error="no usage in final chunk")
    return Reply(
        ok=ttft is not None,
        completion_tokens=usage.get("completion_tokens") or 0,
        prompt_tokens=usage.get("prompt_tokens"),
        ttft_s=ttft,
        latency_s=latency,
        model=served,
        error=None if ttft is not None else "no content",
        text="".join(pieces),
    )


async def vllm_conversation(
    client: httpx.AsyncClient,
    vllm: str,
    model: str,
    index: int,
    turns: int,
    max_tokens: int,
    prefix_cache: bool = True,
) -> list[Reply]:
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    replies = []
    for turn in range(turns):
        messages.append({"role": "user", "content": question(index, turn, turns)})
        salt = None if prefix_cache else f"{index}-{turn}-{time.perf_counter_ns()}"
        try:
            reply = await vllm_reply(client, vllm, model, messages, max_tokens, salt)
        except (httpx.HTTPError, ValueError) as error:
            reply = Reply(ok=False, error=f"{type(error).__name__}: {error}"[:200])
        replies.append(reply)
        if reply.ok:
            messages.append({"role": "assistant", "content": reply.text})
        else:
            messages.pop()  # the app also leaves failed replies out of the history
    return replies


Conversation = Callable[[httpx.AsyncClient, int], Coroutine[Any, Any, list[Reply]]]


def add_stored_usage(replies: Sequence[Reply], database: str | None) -> None:
    """The app's customer API does not expose token counts; its SQLite store has them (vLLM's usage)."""
    if not database:
        return
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        for reply in replies:
            if reply.message_id is None:
                continue
            stored = db.execute(
                "SELECT prompt_tokens, completion_tokens FROM message WHERE id = ?", (reply.message_id,)
            ).fetchone()
            if stored:
                reply.prompt_tokens, reply.completion_tokens = stored[0], stored[1] or 0


async def run_row(
    target: str, concurrency: int, conversation: Conversation, max_connections: int, database: str | None = None
) -> Row:
    # HTTP/1.1 needs one connection per open stream, so the pool must hold all N at once.
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(600.0)) as client:
        start = time.perf_counter()
        results = await asyncio.gather(*(conversation(client, index) for index in range(concurrency)))
        wall = time.perf_counter() - start
    replies = [reply for replies in results for reply in replies]
    add_stored_usage(replies, database)
    return summarise(target, concurrency, replies, wall)


async def pick_adapter(vllm: str) -> str | None:
    async with httpx.AsyncClient(timeout=30.0) as client:
        response = await client.get(f"{vllm}/v1/models")
        response.raise_for_status()
        ids = [model["id"] for model in response.json().get("data", [])]
    return next((model for model in ids if model != "base"), None)


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


COLUMNS = [
    ("target", 13),
    ("N", 4),
    ("replies", 8),
    ("fail", 5),
    ("tokens", 8),
    ("wall s", 8),
    ("replies/s", 9),
    ("tok/s", 8),
    ("ttft p50", 9),
    ("ttft p95", 9),
    ("lat p50", 8),
    ("lat p95", 8),
    ("prompt tok", 11),
    ("reply tok", 10),
]


def table_line(cells: Iterable[str]) -> str:
    return "  ".join(
        cell.ljust(width) if i == 0 else cell.rjust(width)
        for i, (cell, (_, width)) in enumerate(zip(cells, COLUMNS, strict=True))
    )


def row_cells(row: Row) -> list[str]:
    return [
        row.target,
        str(row.concurrency),
        str(row.replies),
        str(row.failures),
        str(row.completion_tokens),
        fmt(row.wall_s),
        fmt(row.replies_per_s),
        fmt(row.tokens_per_s, ".1f"),
        fmt(row.ttft_p50_s, ".3f"),
        fmt(row.ttft_p95_s, ".3f"),
        fmt(row.latency_p50_s),
        fmt(row.latency_p95_s),
        fmt(row.prompt_tokens_mean, ".0f"),
        fmt(row.reply_tokens_mean, ".0f"),
    ]


def ratio_line(rows: Sequence[Row]) -> str:
    """App replies/s over the limit row's (target: >= 0.9 at N=32), and over the LoRA server's."""
    by_key = {(row.target, row.concurrency): row for row in rows}
    parts = []
    for n in sorted({row.concurrency for row in rows}):
        app = by_key.get(("app", n))
        if app is None:
            continue
        ratios = []
        for other in ("limit", "vllm-adapter"):
            ref = by_key.get((other, n))
            value = app.replies_per_s / ref.replies_per_s if ref and ref.replies_per_s > 0 else None
            ratios.append(f"/{other} {fmt(value)}")
        parts.append(f"N={n}: " + ", ".join(ratios))
    return "app replies/s ratio  " + "; ".join(parts)


@contextmanager
def limit_server(data_dir: Path) -> Iterator[tuple[str, str, str]]:
    """A raw vLLM with this CPU's best settings (the app's cached dtype/cores choice, prefix caching, no LoRA)
    serving the promoted version merged, on a free port; yields (url, model, command line)."""
    from core.process import free_port
    from core.settings import Settings
    from core.vllm_process import VLLMServer, vllm_config
    from runtime.merge import merge_adapter
    from runtime.registry import AdapterRegistry
    from serving.services import vllm_tuning

    settings = Settings(data_dir=data_dir)
    registry = AdapterRegistry(settings.adapters_dir)
    version = registry.active()
    if version is None:
        raise SystemExit(f"no promoted adapter in {settings.adapters_dir}: start the app once first")
    merged = merge_adapter(settings.base_model_dir, registry.path(version), settings.models_dir / "merged" / version)
    # Through the app's own link to it when there is one: vLLM's compile cache is keyed by that path.
    links = [settings.models_dir / "merged" / f"serving-{slot}" for slot in ("blue", "green")]
    merged = next((link for link in links if link.exists() and link.resolve() == merged.resolve()), merged)
    tuning = vllm_tuning(settings)
    config = vllm_config(
        settings, tuning, model_dir=merged, served_model_name=version, port=free_port(),
        log_path=settings.logs_dir / "vllm-bench-limit.log", enable_lora=False,
    )  # fmt: skip
    server = VLLMServer(config, adapters=dict)
    env = f"VLLM_CPU_OMP_THREADS_BIND={config.threads_bind} VLLM_CPU_KVCACHE_SPACE={config.kvcache_gib}"
    command = f"{env} {' '.join(server.command())}"
    print(f"limit: starting raw vLLM ({tuning.dtype} on cores {tuning.threads_bind}: {tuning.reason})", flush=True)
    server.start()
    try:
        yield server.url, version, command
    finally:
        server.stop()


async def prefix_cache_counts(vllm: str) -> dict[str, float]:
    """Prompt tokens a vLLM server looked up in its prefix cache, and found, from its /metrics."""
    async with httpx.AsyncClient(timeout=30.0) as client:
        text = (await client.get(f"{vllm}/metrics")).text
    counts = {"hits": 0.0, "queries": 0.0}
    for line in text.splitlines():
        for name in counts:
            if line.startswith(f"vllm:prefix_cache_{name}_total"):
                counts[name] += float(line.rsplit(" ", 1)[1])
    return counts


async def merged_version(app: str, client: httpx.AsyncClient) -> str | None:
    """The version the app serves from its merged server, from its unauthenticated /metrics page."""
    text = (await client.get(f"{app}/metrics")).text
    found = re.search(r'supportbot_merged_serving\{version="([^"]+)"\} 1', text)
    return found.group(1) if found else None


@dataclass
class SwitchResult:
    """One promotion under traffic: when the new version answered, and what failed meanwhile."""

    to: str
    answering_s: float | None
    merged_s: float | None
    replies: int
    failures: int
    errors: list[str] = field(default_factory=list)


async def timed_switch(app: str, data_dir: Path, to: str, streams: int, timeout_s: float) -> SwitchResult:
    """Promote `to` as `supportbot promote` does and keep `streams` conversations talking until the app serves it
    from its merged server: seconds to the first reply by `to`, to merged serving, and the failed replies."""
    from runtime.registry import AdapterRegistry, promote

    replies: list[Reply] = []
    answering: float | None = None
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=streams + 4)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(600.0)) as client:
        started = time.perf_counter()

        async def talk(index: int) -> None:
            nonlocal answering
            turn = 0
            while not stop.is_set():
                for reply in await app_conversation(client, app, 10_000 + index * 100 + turn, 1):
                    replies.append(reply)
                    if answering is None and reply.model == to:
                        answering = time.perf_counter() - started
                turn += 1

        talkers = [asyncio.create_task(talk(index)) for index in range(streams)]
        await asyncio.sleep(2.0)  # traffic already flowing when the promotion lands
        started = time.perf_counter()
        await asyncio.to_thread(promote, AdapterRegistry(data_dir / "adapters"), to)
        merged = None
        while time.perf_counter() - started < timeout_s:
            if await merged_version(app, client) == to:
                merged = time.perf_counter() - started
                break
            await asyncio.sleep(1.0)
        await asyncio.sleep(3.0)  # a few replies from the merged server too
        stop.set()
        await asyncio.gather(*talkers)
    failed = [reply for reply in replies if not reply.ok]
    return SwitchResult(
        to=to, answering_s=answering, merged_s=merged, replies=len(replies), failures=len(failed),
        errors=sorted({reply.error or "" for reply in failed})[:5],
    )  # fmt: skip


async def main(args: argparse.Namespace) -> dict:
    app, vllm = args.app.rstrip("/"), args.vllm.rstrip("/")
    levels = [int(level) for level in args.concurrency.split(",") if level.strip()]
    adapter = args.adapter = args.adapter or (await pick_adapter(vllm) if args.lora_rows else None)
    pool = max(levels) + 4
    print(f"load average {' '.join(f'{value:.2f}' for value in os.getloadavg())} at start", flush=True)

    targets: list[tuple[str, Conversation]] = []
    if args.app_rows:
        targets.append(("app", lambda client, i: app_conversation(client, app, i, args.turns)))
    if args.lora_rows:
        targets.append(
            ("vllm-base", lambda client, i: vllm_conversation(client, vllm, "base", i, args.turns, args.max_tokens))
        )
        if adapter is not None:
            targets.append(
                ("vllm-adapter",
                 lambda client, i: vllm_conversation(client, vllm, adapter, i, args.turns, args.max_tokens))
            )  # fmt: skip

    rows: list[Row] = []
    if args.wait_merged and args.app_rows:
        async with httpx.AsyncClient(timeout=30.0) as client:
            waited = time.perf_counter()
            while (served := await merged_version(app, client)) is None:
                if time.perf_counter() - waited > args.switch_timeout_s:
                    raise SystemExit("the app never served a merged model (is SUPPORTBOT_SERVE_MERGED off?)")
                await asyncio.sleep(2.0)
        print(f"app serves {served} from its merged model (waited {time.perf_counter() - waited:.0f} s)")
    print(f"app {app}, vllm {vllm}, adapter {adapter}, turns {args.turns}, max_tokens {args.max_tokens}")

    async def run_targets(chosen: list[tuple[str, Conversation]]) -> None:
        for n in levels:
            for target, conversation in chosen:
                row = await run_row(target, n, conversation, pool, args.database if target == "app" else None)
                rows.append(row)
                print(table_line(row_cells(row)), flush=True)

    print(table_line(name for name, _ in COLUMNS))
    await run_targets(targets)
    limit_command = None
    prefix_hits: dict[str, float] = {}
    if args.limit:
        with limit_server(Path(args.data_dir)) as (url, model, limit_command):
            limit_rows: list[tuple[str, Conversation]] = [
                ("limit", lambda client, i: vllm_conversation(client, url, model, i, args.turns, args.max_tokens))
            ]
            if args.prefix_cache_compare:
                # The same server and questions, each request salted so that no cached prefix is reused.
                limit_rows.append(
                    ("limit-nocache",
                     lambda client, i: vllm_conversation(client, url, model, i, args.turns, args.max_tokens, False))
                )  # fmt: skip
            await run_targets(limit_rows)
            prefix_hits = await prefix_cache_counts(url)
    print("(seconds; 'prompt tok' / 'reply tok' are mean tokens per reply)")
    if limit_command:
        print(f"limit row: {limit_command}")
    for row in rows:
        if row.target == "app" and row.models:
            print(f"app N={row.concurrency} answered with model(s): {', '.join(row.models)}")
        if row.errors:
            print(f"{row.target} N={row.concurrency} errors: {' | '.join(row.errors)}")
    print(ratio_line(rows))
    if prefix_hits.get("queries"):
        print(
            f"limit server prefix cache: {prefix_hits['hits']:.0f} of {prefix_hits['queries']:.0f} prompt tokens "
            f"served from cache ({prefix_hits['hits'] / prefix_hits['queries']:.0%}, all its rows together)"
        )

    switches: list[SwitchResult] = []
    if args.switch:
        from runtime.registry import AdapterRegistry

        registry = AdapterRegistry(Path(args.data_dir) / "adapters")
        in_service = registry.active()
        other = next((name for name in reversed(registry.versions()) if name != in_service), None)
        if in_service is None or other is None:
            print("--switch needs two adapter versions in the store")
        else:
            for to in (other, in_service):  # a promotion, then the rollback
                switch = await timed_switch(app, Path(args.data_dir), to, args.switch_streams, args.switch_timeout_s)
                switches.append(switch)
                print(
                    f"promote -> {switch.to}: new version answering after {fmt(switch.answering_s, '.1f')} s, "
                    f"from its merged server after {fmt(switch.merged_s, '.1f')} s; {switch.replies} replies "
                    f"during the switch, {switch.failures} failed {' | '.join(switch.errors)}",
                    flush=True,
                )
    print(f"load average {' '.join(f'{value:.2f}' for value in os.getloadavg())} at end")
    return {"rows": rows, "switches": switches, "limit_command": limit_command, "prefix_cache": prefix_hits}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", default="http://127.0.0.1:8000", help="supportbot base URL")
    parser.add_argument("--vllm", default="http://127.0.0.1:8001", help="vLLM OpenAI-compatible base URL")
    parser.add_argument("--concurrency", default="1,32", help="comma list of concurrent conversations")
    parser.add_argument("--turns", type=int, default=3, help="messages per conversation, sent one after another")
    parser.add_argument(
        "--max-tokens", type=int, default=200, help="reply limit for the vLLM rows; match the app's max_reply_tokens"
    )
    parser.add_argument("--adapter", default=None, help="served adapter name (default: first non-'base' model)")
    parser.add_argument(
        "--database", default="var/supportbot.db", help="the app's SQLite file, read for the replies' token counts"
    )
    parser.add_argument("--json", default=None, help="also write the rows as JSON to this path")
    parser.add_argument("--data-dir", default="var", help="the app's data folder (adapters, models, tuning cache)")
    parser.add_argument(
        "--limit", action=argparse.BooleanOptionalAction, default=True,
        help="start a raw vLLM with this CPU's best settings on the promoted version, merged (the limit row)",
    )  # fmt: skip
    parser.add_argument(
        "--lora-rows", action=argparse.BooleanOptionalAction, default=False,
        help="also send the questions to the app's runtime-LoRA vLLM (--vllm) as base and adapter",
    )  # fmt: skip
    parser.add_argument(
        "--prefix-cache-compare", action=argparse.BooleanOptionalAction, default=True,
        help="also run the limit rows with prefix reuse defeated (a cache salt per request): prefix caching's effect",
    )  # fmt: skip
    parser.add_argument(
        "--app-rows", action=argparse.BooleanOptionalAction, default=True,
        help="measure the app (--no-app-rows: only the limit rows, no app needed)",
    )  # fmt: skip
    parser.add_argument(
        "--wait-merged", action=argparse.BooleanOptionalAction, default=True,
        help="first wait until the app serves the promoted version from its merged model",
    )  # fmt: skip
    parser.add_argument("--switch", action="store_true", help="time a promotion and its rollback under traffic")
    parser.add_argument("--switch-streams", type=int, default=4, help="conversations talking during a switch")
    parser.add_argument("--switch-timeout-s", type=float, default=900.0, help="longest wait for merged serving")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    result = asyncio.run(main(arguments))
    if arguments.json:
        with open(arguments.json, "w") as out:
            json.dump(
                {
                    "args": vars(arguments),
                    "rows": [asdict(row) for row in result["rows"]],
                    "switches": [asdict(switch) for switch in result["switches"]],
                    "limit_command": result["limit_command"],
                    "prefix_cache": result["prefix_cache"],
                    "load_average_end": os.getloadavg(),
                },
                out,
                indent=2,
            )
        print(f"wrote {arguments.json}")
