"""The long-lived parts of the running app, built once at start-up and handed to routes through `deps`."""

import logging
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from bot.context import ChatTemplateCounter
from bot.dialogue import DialogueManager, Swappable
from bot.domain import DomainPack, load_pack
from bot.llm import VLLMChatModel
from bot.replicas import ReplicaPool
from bot.routing import RuleRouter
from conversations.db import init_db, make_engine
from core.settings import Settings
from finetune.manager import TrainingManager
from finetune.registry import AdapterRegistry
from serving.chat import ChatService
from serving.knowledge import KnowledgeSync
from serving.limits import RateLimiter, limits_of
from serving.live import ConversationWatcher
from serving.promotions import PromotionWatcher, load_promoted_classifier, routing_config

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


def build_services(settings: Settings) -> Services:
    """Every long-lived part, built once at start-up: the store, the domain pack, the LLM client, the dialogue."""
    engine = make_engine(
        settings.resolved_database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        wait_s=settings.db_wait_s,
    )
    init_db(engine)
    pack = load_pack(settings.domain_pack)
    llm = VLLMChatModel(
        replicas=ReplicaPool(settings.vllm_replica_urls, refresh_s=settings.vllm_refresh_s),
        max_tokens=settings.max_reply_tokens,
        timeout_s=settings.llm_timeout_s,
        max_concurrent=settings.llm_max_concurrent,
        start_within_s=settings.busy_reply_after_s,
    )
    active = AdapterRegistry(settings.adapters_dir).active()
    classifier_name, classifier = load_promoted_classifier(settings)
    knowledge = KnowledgeSync.start(engine, pack)
    dialogue = DialogueManager(
        pack=pack,
        llm=llm,
        knowledge=knowledge.index,
        counter=ChatTemplateCounter(settings.base_model_dir),
        models=Swappable(active or settings.served_model_name),
        classifier=Swappable(classifier),
        router=RuleRouter(pack, routing_config(settings, classifier)),
        context_tokens=settings.vllm_max_model_len,
        reply_tokens=settings.max_reply_tokens,
        summary_model=settings.served_model_name,
    )
    logger.info(
        "serving with model %s, classifier %s and domain pack %s", dialogue.models.current(), classifier_name, pack.name
    )
    return Services(
        settings=settings,
        engine=engine,
        pack=pack,
        llm=llm,
        dialogue=dialogue,
        training=TrainingManager(settings, engine),
        promotions=PromotionWatcher(settings, pack, llm, dialogue, classifier_name),
        chat=ChatService(engine=engine, dialogue=dialogue, pack=pack),
        watcher=ConversationWatcher(engine),
        knowledge=knowledge,
        limiter=RateLimiter(engine, limits_of(settings)),
    )
