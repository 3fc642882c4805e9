"""The FastAPI application: builds the long-lived services once and mounts the routers."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bot.context import ChatTemplateCounter
from bot.dialogue import DialogueManager, Swappable
from bot.domain import load_pack
from bot.llm import VLLMChatModel
from bot.replicas import ReplicaPool
from bot.routing import RuleRouter
from conversations.db import init_db, make_engine
from conversations.retention import apply_retention
from finetune.registry import AdapterRegistry
from serving import metrics
from serving.auth import StaffAuthError, staff_auth_response
from serving.console import api as staff_api
from serving.console import knowledge as console_knowledge
from serving.console import pages as console_pages
from serving.deps import Services
from serving.errors import install_error_handlers
from serving.knowledge import KnowledgeSync
from serving.limits import RateLimited, rate_limited_response
from serving.promotions import PromotionWatcher, load_promoted_classifier, routing_config
from serving.routes import customer, events, feedback, health, training, widget
from serving.settings import Settings
from serving.training import TrainingManager

logger = logging.getLogger(__name__)


def build_services(settings: Settings) -> Services:
    engine = make_engine(settings.resolved_database_url)
    init_db(engine)
    pack = load_pack(settings.domain_pack)
    llm = VLLMChatModel(
        replicas=ReplicaPool(settings.vllm_replica_urls, refresh_s=settings.vllm_refresh_s),
        max_tokens=settings.max_reply_tokens,
        timeout_s=settings.llm_timeout_s,
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
        classifier_name=classifier_name,
        knowledge=knowledge,
    )


async def retention_loop(settings: Settings, engine: Engine) -> None:
    """Apply the retention policy at start and then every `retention_every_hours`; it is idempotent, so
    several app replicas running it only repeat work that is already done."""
    if settings.retention_every_hours <= 0:
        return

    def apply() -> None:
        with Session(engine) as session:
            result = apply_retention(session=session, keep_days=settings.retention_days, mode=settings.retention_mode)
        if result.conversations:
            logger.info(
                "retention: %s %d conversation(s) idle since before %s",
                "deleted" if result.mode == "delete" else "anonymised",
                result.conversations,
                result.cutoff.date(),
            )

    while True:
        try:
            await asyncio.to_thread(apply)
        except Exception:  # noqa: BLE001 - the loop must keep running; the next pass tries again
            logger.exception("retention run failed")
        await asyncio.sleep(settings.retention_every_hours * 3600)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings)
        app.state.services = services
        services.promotions = PromotionWatcher(services)
        services.training = TrainingManager(settings, services.engine)
        interrupted = services.training.mark_lost_runs()
        if interrupted:
            logger.warning(
                "%d retraining run(s) were interrupted by the last stop; resume them from the console", interrupted
            )
        watching = asyncio.create_task(services.promotions.run())
        scheduling = asyncio.create_task(services.training.run_schedule())
        retaining = asyncio.create_task(retention_loop(settings, services.engine))
        assert services.knowledge is not None
        syncing = asyncio.create_task(services.knowledge.run())
        yield
        syncing.cancel()
        watching.cancel()
        scheduling.cancel()
        retaining.cancel()
        for task in list(services.background):
            task.cancel()
        services.engine.dispose()

    app = FastAPI(title="supportbot", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(customer.router)
    app.include_router(events.router)
    app.include_router(feedback.router)
    app.include_router(widget.router)
    app.include_router(training.router)
    if settings.metrics_enabled:
        app.include_router(metrics.router)
    app.add_exception_handler(RateLimited, rate_limited_response)
    app.include_router(console_pages.router)
    app.include_router(console_knowledge.router)
    app.include_router(staff_api.router)
    app.mount("/console/static", StaticFiles(directory=console_pages.STATIC_DIR), name="console-static")
    app.add_exception_handler(StaffAuthError, staff_auth_response)
    # The widget calls the API from the sites that embed it; in local mode any site may.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"] if settings.mode == "local" else settings.widget_allowed_origins,
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
        expose_headers=["Retry-After"],
        max_age=600,
    )

    @app.get("/", include_in_schema=False)
    def index() -> RedirectResponse:
        return RedirectResponse("/docs")

    return app
