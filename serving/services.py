"""The long-lived parts of the running app, built once at start-up and handed to routes through `deps`."""

import logging
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from bot.actions import ActionRunner, load_actions
from bot.dialogue import DialogueManager
from bot.domain import DomainPack, load_pack
from bot.llm import VLLMChatModel
from bot.replicas import ReplicaPool
from conversations.db import init_db, make_engine
from core.cpu_tuning import Tuning, tune
from core.settings import Settings
from core.vllm_process import vllm_config
from runtime.dialogue import load_promoted_classifier, load_promoted_selector, settings_dialogue
from runtime.merged_serving import MergedServing
from runtime.registry import AdapterRegistry
from runtime.training import RunPlanner, TrainingManager
from serving.chat import ChatService
from serving.desk import AlertSender, Desk
from serving.knowledge import KnowledgeSync
from serving.limits import RateLimiter, limits_of
from serving.live import ConversationWatcher
from serving.promotions import PromotionWatcher

logger = logging.getLogger(__name__)


@dataclass
class Services:
    """Long-lived parts of the running app, built once in the lifespan."""

    settings: Settings
    engine: Engine
    pack: DomainPack
    llm: VLLMChatModel
    dialogue: DialogueManager
    training: TrainingManager
    promotions: PromotionWatcher
    chat: ChatService
    watcher: ConversationWatcher
    # The help articles' search index, rebuilt when the knowledge base changes.
    knowledge: KnowledgeSync
    # Rate limits counted in the database, shared with every other replica.
    limiter: RateLimiter
    # The support desk: tickets, assignment and the alerts it queues, and the loop that sends them.
    desk: Desk
    alerts: AlertSender
    # With a managed vLLM: the dtype and cores it runs with, and the promoted version's merged server.
    tuning: Tuning | None = None
    merged: MergedServing | None = None


def build_actions(settings: Settings, pack: DomainPack) -> ActionRunner | None:
    """The pack's actions, checked against the settings' secrets; a broken actions.yaml stops start-up."""
    actions = load_actions(pack)
    if not actions:
        return None
    if settings.mode != "local" and settings.actions_base_url is None:
        # Outside local mode there is no demo shop to call: the pack's actions wait for the company's own API.
        logger.warning(
            "the domain pack declares actions (%s) but SUPPORTBOT_ACTIONS_BASE_URL is not set: they are off",
            ", ".join(action.name for action in actions),
        )
        return None
    logger.info("actions %s call %s", ", ".join(a.name for a in actions), settings.resolved_actions_base_url)
    return ActionRunner(
        actions,
        base_url=settings.resolved_actions_base_url,
        secrets=settings.resolved_action_secrets,
        handoff_message=pack.handoff_message,
        max_identity_failures=settings.action_identity_attempts,
    )


# On one GPU: two merged servers at once during a switch, beside the runtime-LoRA one (cli/main.py: 0.2).
MERGED_SERVER_GPU_SHARE = 0.35
MERGED_START_TIMEOUT_S = 1800.0


def vllm_tuning(settings: Settings) -> Tuning:
    """This machine's vLLM dtype and cores, measured once and cached in the data folder."""
    return tune(
        model_dir=settings.base_model_dir,
        cache_path=settings.cpu_tuning_path,
        dtype_override=settings.vllm_dtype,
    )


def merged_serving(settings: Settings, llm: VLLMChatModel, tuning: Tuning) -> MergedServing:
    registry = AdapterRegistry(settings.adapters_dir)
    return MergedServing(
        llm=llm,
        base_model_dir=settings.base_model_dir,
        adapter_path=registry.path,
        merged_dir=settings.models_dir / "merged",
        logs_dir=settings.logs_dir,
        make_config=lambda model_dir, name, port: vllm_config(
            settings,
            tuning,
            model_dir=model_dir,
            served_model_name=name,
            port=port,
            log_path=settings.logs_dir / f"vllm-merged-{name}.log",
            enable_lora=False,
            reloadable=True,
            gpu_memory_fraction=MERGED_SERVER_GPU_SHARE,
            # The runtime-LoRA server answers meanwhile, so a slow start (a graph compile on a busy CPU) fails nothing.
            start_timeout_s=max(settings.vllm_start_timeout_s, MERGED_START_TIMEOUT_S),
        ),
        drain_timeout_s=settings.llm_timeout_s + 30,
    )


def build_services(settings: Settings, tuning: Tuning | None = None, planner: RunPlanner | None = None) -> Services:
    """Every long-lived part, built once at start-up: the store, the domain pack, the LLM client, the dialogue.

    `tuning` is what the managed vLLM was started with (measured here when not given); `planner` works out a
    retraining run's plan when it is queued (without one, the run shows its plan once the worker has made it).
    """
    engine = make_engine(
        settings.resolved_database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        wait_s=settings.db_wait_s,
    )
    init_db(engine)
    pack = load_pack(settings.domain_pack)
    actions = build_actions(settings, pack)  # before the slow parts: a broken actions.yaml fails at once
    llm = VLLMChatModel(
        replicas=ReplicaPool(settings.vllm_replica_urls, refresh_s=settings.vllm_refresh_s),
        max_tokens=settings.max_reply_tokens,
        timeout_s=settings.llm_timeout_s,
        max_concurrent=settings.llm_max_concurrent,
        start_within_s=settings.busy_reply_after_s,
        max_queued=settings.llm_max_queued,
    )
    active = AdapterRegistry(settings.adapters_dir).active()
    classifier_name, classifier = load_promoted_classifier(settings)
    selector_name, selector = load_promoted_selector(settings)
    knowledge = KnowledgeSync.start(engine, pack)
    model = active or settings.served_model_name
    dialogue = settings_dialogue(
        settings, pack, llm=llm, knowledge=knowledge.index, model=model, classifier=classifier, actions=actions,
        selector=selector,
    )  # fmt: skip
    # Lingua loads its language models on first use: here at start (about a second), not on a customer's turn.
    dialogue.languages.detect("Where is my order? It has not arrived yet.")
    logger.info(
        "serving with model %s, classifier %s, answer selector %s and domain pack %s", dialogue.models.current(),
        classifier_name, selector_name or "none (rules)", pack.name,
    )  # fmt: skip
    desk = Desk(engine=engine, settings=settings, pack=pack)
    merged = None
    if settings.manages_vllm:
        tuning = tuning or vllm_tuning(settings)
        if settings.serve_merged:
            merged = merged_serving(settings, llm, tuning)
    return Services(
        settings=settings,
        engine=engine,
        pack=pack,
        llm=llm,
        dialogue=dialogue,
        training=TrainingManager(settings, engine, planner),
        promotions=PromotionWatcher(
            settings, pack, llm, dialogue, classifier_name, merged=merged, selector_name=selector_name
        ),
        chat=ChatService(engine=engine, dialogue=dialogue, pack=pack, desk=desk),
        watcher=ConversationWatcher(engine),
        knowledge=knowledge,
        limiter=RateLimiter(engine, limits_of(settings)),
        desk=desk,
        alerts=AlertSender(engine, settings, desk),
        tuning=tuning,
        merged=merged,
    )
