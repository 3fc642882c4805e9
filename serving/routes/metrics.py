"""The Prometheus page at /metrics: the bot's own metrics (serving/metrics.py) and the replicas as last seen.

vLLM exports its own (`vllm:*`) at its /metrics. The page has no authentication: keep it on an internal network.
"""

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.deps import ServicesDep
from serving.metrics import REGISTRY, observe_replicas, observe_serving

router = APIRouter(tags=["operations"])


@router.get("/metrics", include_in_schema=False)
def metrics(services: ServicesDep) -> Response:
    """Prometheus text format; unauthenticated, so keep it on an internal network."""
    observe_replicas(services.llm.replicas.snapshot())
    observe_serving(services.tuning, services.merged.version if services.merged is not None else None)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
