"""The FastAPI application: builds the long-lived services once and mounts the routers."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from bot.context import ChatTemplateCounter
from bot.dialogue import DialogueManager, ModelSelector
from bot.domain import load_pack
from bot.llm import VLLMChatModel
from conversations.db import init_db, make_engine
from finetune.registry import AdapterRegistry
from serving.deps import Services
from serving.errors import install_error_handlers
from serving.routes import customer, health
from serving.settings import Settings

logger = logging.getLogger(__name__)


def build_services(settings: Settings) -> Services:
    engine = make_engine(settings.resolved_database_url)
    init_db(engine)
    pack = load_pack(settings.domain_pack)
    llm = VLLMChatModel(
        base_url=settings.resolved_vllm_url, max_tokens=settings.max_reply_tokens, timeout_s=settings.llm_timeout_s
    )
    active = AdapterRegistry(settings.adapters_dir).active()
    dialogue = DialogueManager(
        pack=pack,
        llm=llm,
        counter=ChatTemplateCounter(settings.base_model_dir),
        models=ModelSelector(active or settings.served_model_name),
        context_tokens=settings.vllm_max_model_len,
        reply_tokens=settings.max_reply_tokens,
    )
    logger.info("serving with model %s and domain pack %s", dialogue.models.current(), pack.name)
    return Services(settings=settings, engine=engine, pack=pack, llm=llm, dialogue=dialogue)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.services = build_services(settings)
        yield
        app.state.services.engine.dispose()

    app = FastAPI(title="supportbot", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(customer.router)

    @app.get("/", include_in_schema=False)
    def index() -> RedirectResponse:
        return RedirectResponse("/docs")

    return app
