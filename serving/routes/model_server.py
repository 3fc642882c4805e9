"""Admin view of how the model is served: vLLM's dtype and cores (and the measurement behind them), the version
on its merged server, switches in progress, and where each model's requests go."""

from fastapi import APIRouter
from pydantic import BaseModel

from serving.deps import CurrentAdmin, ServicesDep

router = APIRouter(prefix="/api/admin", tags=["admin: model server"])


class ModelServerStatus(BaseModel):
    """How replies are generated right now."""

    # The model (adapter version) the bot asks for.
    model: str
    # The runtime-LoRA vLLM (or the replicas): base model, candidates, and the fallback of a merged server.
    lora_servers: list[str]
    # Models whose requests go to a server of their own first (the merged version).
    routes: dict[str, str]
    # The managed vLLM's dtype and cores, with the measurement behind them; None for a vLLM run elsewhere.
    tuning: dict | None
    # The merged server's state and recent switches; None when merged serving is off.
    merged: dict | None


@router.get("/model-server")
def model_server(_: CurrentAdmin, services: ServicesDep) -> ModelServerStatus:
    return ModelServerStatus(
        model=services.dialogue.models.current(),
        lora_servers=services.llm.replicas.urls,
        routes=services.llm.routes(),
        tuning=services.tuning.as_dict() if services.tuning is not None else None,
        merged=services.merged.status() if services.merged is not None else None,
    )
