"""The Prometheus page at /metrics: the bot's own metrics (serving/metrics.py) and the replicas as last seen.

vLLM exports its own (`vllm:*`) at its /metrics. With `metrics_token` set the page wants it as a bearer
token; without one it is served only in local mode (serving/app.py decides whether to mount it).
"""

import hmac
from typing import Annotated

from fastapi import APIRouter, Header, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.deps import ServicesDep
from serving.errors import ApiError
from serving.metrics import REGISTRY, observe_replicas, observe_serving

router = APIRouter(tags=["operations"])


@router.get("/metrics", include_in_schema=False)
def metrics(services: ServicesDep, authorization: Annotated[str | None, Header()] = None) -> Response:
    """Prometheus text format."""
    expected = services.settings.metrics_token
    if expected is not None:
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
            raise ApiError(401, "unauthorized", "Send the metrics token as 'Authorization: Bearer <token>'.")
    observe_replicas(services.llm.replicas.snapshot())
    observe_serving(services.tuning, services.merged.version if services.merged is not None else None)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
