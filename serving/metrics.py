"""Prometheus metrics of the bot's work (turns, stage latencies, handoffs, fallbacks, feedback, tokens).

vLLM exports its own (`vllm:*`) at its /metrics; deploy/grafana/supportbot.json shows both side by side.
The endpoint has no authentication: serve it on an internal network only (or turn it off).
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bot.dialogue import TurnResult
from bot.replicas import Replica
from bot.routing import Decision
from core.cpu_tuning import Tuning

# The app's own registry: nothing else a library registers ends up on the page, and tests see one set.
REGISTRY = CollectorRegistry()

# The dialogue manager's stages (TurnResult.stages_ms); "total" is the whole turn, LLM included.
STAGES = ("classify", "route", "prompt", "llm_first_token", "llm_total", "total")
# Latencies from a millisecond (classification) up to a minute (the LLM timeout).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60)

TURNS = Counter(
    "supportbot_turns", "Customer turns the bot handled, by routing decision and intent.", ["decision", "intent"],
    registry=REGISTRY,
)  # fmt: skip
HANDOFFS = Counter(
    "supportbot_handoffs", "Conversations handed to a human by the bot, by why.", ["reason"], registry=REGISTRY
)
FALLBACKS = Counter(
    "supportbot_fallbacks",
    "Turns answered with the apology because the model could not answer (model_unavailable, window_too_small), "
    "or cut short because the customer left (interrupted).",
    ["reason"],
    registry=REGISTRY,
)
LEAKS_BLOCKED = Counter(
    "supportbot_leaks_blocked", "Replies stopped for repeating the system prompt.", registry=REGISTRY
)
FEEDBACK = Counter("supportbot_feedback", "Thumbs on bot replies, by rating (up, down).", ["rating"], registry=REGISTRY)
CSAT = Histogram(
    "supportbot_csat_score", "Satisfaction scores (1-5) customers gave when ending a chat.",
    buckets=(1, 2, 3, 4, 5), registry=REGISTRY,
)  # fmt: skip
TOKENS = Counter(
    "supportbot_llm_tokens", "Tokens through the LLM for customer replies, by direction (prompt, completion).",
    ["direction"], registry=REGISTRY,
)  # fmt: skip
STAGE_SECONDS = Histogram(
    "supportbot_stage_seconds", "Time spent in each stage of a bot turn.", ["stage"], buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)  # fmt: skip
ACTION_CALLS = Counter(
    "supportbot_action_calls", "Calls the bot made to the company's systems (actions.yaml), by action and outcome "
    "(ok, not found, unavailable, rejected, unexpected result, refused: too many unsuccessful tries).",
    ["action", "outcome"], registry=REGISTRY,
)  # fmt: skip
ACTION_SECONDS = Histogram(
    "supportbot_action_seconds", "Time of an action's HTTP call, retry included.", ["action"],
    buckets=LATENCY_BUCKETS, registry=REGISTRY,
)  # fmt: skip
REPLICA_UP = Gauge(
    "supportbot_vllm_replica_up", "vLLM replicas as the app last saw them (1 answered /v1/models).", ["replica"],
    registry=REGISTRY,
)  # fmt: skip
REPLICA_SERVES = Gauge(
    "supportbot_vllm_replica_serves", "Models (base and adapters) each vLLM replica lists; 1 per pair.",
    ["replica", "model"], registry=REGISTRY,
)  # fmt: skip

VLLM_TUNING = Gauge(
    "supportbot_vllm_tuning",
    "The managed vLLM's dtype and cores as chosen at start; the value is bf16's measured speed-up over fp32 "
    "(0 where not measured).",
    ["dtype", "threads_bind", "cached"],
    registry=REGISTRY,
)
MERGED_SERVING = Gauge(
    "supportbot_merged_serving", "1 for the version customers get from its merged model (no runtime LoRA).",
    ["version"], registry=REGISTRY,
)  # fmt: skip


def _handoff_reason(reason: str) -> str:
    # Route reasons are free text; the label keeps a small fixed set.
    if "negative" in reason:
        return "sentiment"
    if "not understood" in reason:
        return "not_understood"
    if reason.startswith("intent "):
        return "intent"
    if reason.startswith("action ") or reason == "too many unsuccessful lookups":
        return "action"
    return "other"


def record_turn(result: TurnResult) -> None:
    """Count one handled turn and observe its stage latencies and tokens."""
    decision = result.route.decision
    TURNS.labels(decision=decision.value, intent=result.route.intent or "none").inc()
    if decision is Decision.handoff:
        HANDOFFS.labels(reason=_handoff_reason(result.route.reason)).inc()
    if result.leak_blocked:
        LEAKS_BLOCKED.inc()
    if result.action is not None:
        ACTION_CALLS.labels(action=result.action["name"], outcome=result.action["outcome"]).inc()
        if result.action.get("attempts"):
            ACTION_SECONDS.labels(action=result.action["name"]).observe(result.action["ms"] / 1000)
    if result.text is not None and result.completion_tokens is not None:
        TOKENS.labels(direction="prompt").inc(result.prompt_tokens or 0)
        TOKENS.labels(direction="completion").inc(result.completion_tokens)
    for stage in STAGES:
        if stage in result.stages_ms:
            STAGE_SECONDS.labels(stage=stage).observe(result.stages_ms[stage] / 1000)


def record_fallback(reason: str) -> None:
    """Count a turn the model could not answer.

    Reasons: `model_unavailable`, `busy`, `window_too_small`, `interrupted`, `error` (an unexpected fault).
    """
    FALLBACKS.labels(reason=reason).inc()


def record_feedback(rating: str) -> None:
    FEEDBACK.labels(rating=rating).inc()


def record_csat(score: int) -> None:
    CSAT.observe(score)


def observe_replicas(replicas: dict[str, Replica]) -> None:
    """Publish which replica serves which model, as the app's replica pool last saw them."""
    REPLICA_UP.clear()
    REPLICA_SERVES.clear()
    for url, replica in replicas.items():
        REPLICA_UP.labels(replica=url).set(1 if replica.up else 0)
        for model in replica.models:
            REPLICA_SERVES.labels(replica=url, model=model).set(1)


def observe_serving(tuning: Tuning | None, merged_version: str | None) -> None:
    """Publish how the managed vLLM runs (dtype, cores) and which version is served merged."""
    VLLM_TUNING.clear()
    MERGED_SERVING.clear()
    if tuning is not None:
        speedup = tuning.measurement.bf16_speedup if tuning.measurement is not None else 0.0
        cached = str(tuning.cached).lower()
        VLLM_TUNING.labels(dtype=tuning.dtype, threads_bind=tuning.threads_bind or "", cached=cached).set(speedup)
    if merged_version is not None:
        MERGED_SERVING.labels(version=merged_version).set(1)
