"""Liveness and readiness probes for process managers and load balancers."""

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlmodel import Session

from serving.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The app process answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    """The app can serve customers: its database answers and so does the model server."""

    def database_ok() -> bool:
        try:
            with Session(services.engine) as session:
                session.exec(text("SELECT 1"))  # type: ignore[call-overload]
            return True
        except Exception:  # noqa: BLE001 - any failure means not ready
            return False

    checks = {"database": await run_in_threadpool(database_ok), "model_server": await services.llm.ping()}
    ready = all(checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)
