"""Admin API for the learning loop: start, watch, cancel and resume retraining; promote and roll back.

Typed errors (no such run, one already going, a refused adapter) become HTTP in serving/errors.py.
Every call here is an admin action and lands in the audit log.
"""

from fastapi import APIRouter, status
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session

from conversations import crud
from conversations.models import TrainingRunPublic
from runtime.registry import AdapterList, AdapterRegistry, promote
from serving.deps import CurrentAdmin, RowId, ServicesDep, SessionDep
from serving.errors import ApiError

router = APIRouter(prefix="/api/admin", tags=["admin: training"])


def _audit(services, admin, action: str, target: str, details: dict | None = None) -> None:
    with Session(services.engine) as session:
        crud.record_audit(session=session, actor_id=admin.staff.id, action=action, target=target, details=details)


@router.get("/runs")
def list_runs(_: CurrentAdmin, session: SessionDep) -> list[TrainingRunPublic]:
    return [TrainingRunPublic.model_validate(run) for run in crud.list_training_runs(session=session)]


@router.get("/runs/{run_id}")
def read_run(run_id: RowId, _: CurrentAdmin, session: SessionDep) -> TrainingRunPublic:
    return TrainingRunPublic.model_validate(crud.get_training_run(session=session, run_id=run_id))


@router.post("/runs", status_code=status.HTTP_202_ACCEPTED)
async def start_run(admin: CurrentAdmin, services: ServicesDep) -> TrainingRunPublic:
    """Start retraining now: dataset from reviewed conversations, new adapter, evaluation, promotion."""
    run = await run_in_threadpool(services.training.start, "manual")
    await run_in_threadpool(_audit, services, admin, "retrain.start", f"run:{run.id}")
    return TrainingRunPublic.model_validate(run)


@router.post("/runs/{run_id}/cancel")
async def cancel_run(run_id: RowId, admin: CurrentAdmin, services: ServicesDep) -> TrainingRunPublic:
    run = await run_in_threadpool(services.training.cancel, run_id)
    await run_in_threadpool(_audit, services, admin, "retrain.cancel", f"run:{run_id}")
    return TrainingRunPublic.model_validate(run)


@router.post("/runs/{run_id}/resume", status_code=status.HTTP_202_ACCEPTED)
async def resume_run(run_id: RowId, admin: CurrentAdmin, services: ServicesDep) -> TrainingRunPublic:
    run = await run_in_threadpool(services.training.resume, run_id)
    await run_in_threadpool(_audit, services, admin, "retrain.resume", f"run:{run_id}")
    return TrainingRunPublic.model_validate(run)


@router.get("/adapters")
def list_adapters(_: CurrentAdmin, services: ServicesDep) -> AdapterList:
    return AdapterRegistry(services.settings.adapters_dir).listing()


@router.post("/adapters/{name}/promote")
async def promote_adapter(name: str, admin: CurrentAdmin, services: ServicesDep) -> AdapterList:
    """Serve this adapter version from now on (also how an admin rolls back to an older one)."""
    registry = AdapterRegistry(services.settings.adapters_dir)
    settings = services.settings
    # Loaded into vLLM before the pointer moves: a refused load leaves the adapter in service as it was.
    previous = await run_in_threadpool(
        promote, registry, name, serve_on=settings.vllm_urls or settings.resolved_vllm_url
    )
    await services.promotions.check()
    await run_in_threadpool(_audit, services, admin, "adapter.promote", name, {"previous": previous})
    return list_adapters(admin, services)


@router.post("/adapters/rollback")
async def rollback_adapter(admin: CurrentAdmin, services: ServicesDep) -> AdapterList:
    """Go back to the adapter that was in service before the current one."""
    registry = AdapterRegistry(services.settings.adapters_dir)
    previous = registry.previous()
    if previous is None:
        raise ApiError(409, "nothing_to_roll_back", "No earlier adapter was promoted before this one.")
    return await promote_adapter(previous, admin, services)
