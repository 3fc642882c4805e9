"""The FastAPI application: builds the long-lived services once and mounts the routers."""

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, timedelta

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from sqlalchemy.engine import Engine
from sqlmodel import Session
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from conversations import crud
from conversations.models import utcnow
from conversations.retention import apply_retention
from core.cpu_tuning import Tuning
from core.settings import Settings
from runtime.training import RunPlanner
from serving.auth import StaffAuthError, staff_auth_response
from serving.bounds import NoSniff, RequestLimits
from serving.capacity import check_llm_capacity
from serving.console import api as staff_api
from serving.console import data_rights, desk_api, desk_pages, reports
from serving.console import knowledge as console_knowledge
from serving.console import pages as console_pages
from serving.demo_shop import MOUNT_PATH, create_demo_shop
from serving.errors import ERROR_RESPONSES, install_error_handlers
from serving.limits import RateLimited, rate_limited_response
from serving.routes import customer, events, feedback, health, metrics, model_server, training, widget
from serving.services import build_services

logger = logging.getLogger(__name__)


async def retention_loop(settings: Settings, engine: Engine) -> None:
    """Apply the retention policy when it is due: at the first start, then every `retention_every_hours`. Every
    app replica asks and the database gives each due run to one of them (crud.claim_job), so replicas never
    delete or anonymise the same conversations side by side."""
    if settings.retention_every_hours <= 0:
        return
    every = timedelta(hours=settings.retention_every_hours)
    holder = f"{socket.gethostname()}:{os.getpid()}"

    def apply_when_due() -> float:
        """Run it if this replica claims it; returns the seconds until it is due next."""
        with Session(engine) as session:
            if crud.claim_job(session=session, name="retention", every=every, holder=holder):
                result = apply_retention(
                    session=session,
                    keep_days=settings.retention_days,
                    mode=settings.retention_mode,
                    datasets_dir=settings.data_dir / "datasets",
                )
                if result.conversations:
                    logger.info(
                        "retention: %s %d conversation(s) idle since before %s",
                        "deleted" if result.mode == "delete" else "anonymised",
                        result.conversations,
                        result.cutoff.date(),
                    )
            claimed = crud.job_claimed_at(session=session, name="retention")
        if claimed is None:
            return every.total_seconds()
        due = (claimed if claimed.tzinfo else claimed.replace(tzinfo=UTC)) + every
        # A moment past the due time, so the claim finds it due; never longer than one period.
        return min(max((due - utcnow()).total_seconds(), 0.0) + 1.0, every.total_seconds())

    while True:
        try:
            wait_s = await asyncio.to_thread(apply_when_due)
        except Exception:  # noqa: BLE001 - the loop must keep running; the next pass tries again
            logger.exception("retention run failed")
            wait_s = every.total_seconds()
        await asyncio.sleep(wait_s)


def create_app(settings: Settings, tuning: Tuning | None = None, planner: RunPlanner | None = None) -> FastAPI:
    """The app; `tuning` is what the managed vLLM was started with (`supportbot start` measured it), `planner` the
    trainer's planning of a retraining run (`supportbot start` hands it in: serving never imports the trainer)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings, tuning, planner)
        app.state.services = services
        await asyncio.to_thread(check_llm_capacity, settings)
        interrupted = services.training.mark_lost_runs()
        if interrupted:
            logger.warning(
                "%d retraining run(s) were interrupted by the last stop; resume them from the console", interrupted
            )
        watching = asyncio.create_task(services.promotions.run())
        scheduling = asyncio.create_task(services.training.run_schedule())
        retaining = asyncio.create_task(retention_loop(settings, services.engine))
        following = asyncio.create_task(services.watcher.run())
        syncing = asyncio.create_task(services.knowledge.run())
        alerting = asyncio.create_task(services.alerts.run())
        recovering = asyncio.create_task(
            services.chat.recover_abandoned(settings.unanswered_after_s, settings.recovery_every_s)
        )
        yield
        recovering.cancel()
        alerting.cancel()
        syncing.cancel()
        following.cancel()
        watching.cancel()
        scheduling.cancel()
        retaining.cancel()
        for task in list(services.chat.background):
            task.cancel()
        if services.merged is not None:
            await asyncio.to_thread(services.merged.stop)
        services.engine.dispose()

    # Production hides the API's description: it maps every route for an attacker and helps no customer. Locally,
    # /docs and /redoc load Swagger UI and ReDoc from files the fastapi-offline package ships (under /docs/static),
    # not from a CDN, so they work without internet.
    public_docs = settings.mode == "local"
    if public_docs:
        app = FastAPIOffline(
            title="supportbot", version="0.1.0", lifespan=lifespan, responses=ERROR_RESPONSES, static_url="/docs/static"
        )
    else:
        app = FastAPI(
            title="supportbot", version="0.1.0", lifespan=lifespan, responses=ERROR_RESPONSES,
            docs_url=None, redoc_url=None, openapi_url=None,
        )  # fmt: skip
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(customer.router)
    app.include_router(events.router)
    app.include_router(feedback.router)
    app.include_router(widget.router)
    app.include_router(training.router)
    app.include_router(model_server.router)
    if settings.metrics_enabled and (settings.metrics_token or settings.mode == "local"):
        app.include_router(metrics.router)
    elif settings.metrics_enabled:
        logger.warning("/metrics is not served: set SUPPORTBOT_METRICS_TOKEN to scrape it in production")
    app.add_exception_handler(RateLimited, rate_limited_response)
    app.include_router(console_pages.router)
    app.include_router(console_knowledge.router)
    app.include_router(desk_pages.router)
    app.include_router(reports.router)
    app.include_router(reports.api)
    app.include_router(data_rights.router)
    app.include_router(data_rights.api)
    app.include_router(staff_api.router)
    app.include_router(desk_api.router)
    if settings.mode == "local":
        # The pretend shop's order API that the demo pack's actions call over HTTP (serving/demo_shop.py).
        app.mount(MOUNT_PATH, create_demo_shop(settings.demo_shop_key))
    app.mount("/console/static", StaticFiles(directory=console_pages.STATIC_DIR), name="console-static")
    app.add_exception_handler(StaffAuthError, staff_auth_response)
    # The widget calls the API from the sites that embed it; in local mode any site may.
    # Starlette runs the last added first: the client's address from a trusted proxy, CORS, then the size limits.
    app.add_middleware(RequestLimits, max_bytes=settings.max_body_bytes, max_header_bytes=settings.max_header_bytes)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"] if settings.mode == "local" else settings.widget_allowed_origins,
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
        expose_headers=["Retry-After"],
        max_age=600,
    )
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    app.add_middleware(NoSniff)

    @app.get("/", include_in_schema=False)
    def index() -> RedirectResponse:
        # Locally the front page is the demo shop with the widget; in production, the staff console.
        return RedirectResponse("/demo" if settings.mode == "local" else "/console")

    return app
