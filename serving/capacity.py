"""The start-up check that the LLM admission bounds of every app replica together fit what vLLM runs at once.

Each app process lets at most `llm_max_concurrent` replies into vLLM (bot/llm.py); the rest wait in the app, in
order, and get the busy reply past `busy_reply_after_s`. The bound is per process, kept without talking to the
other replicas: the deploy files keep app replicas x bound within vLLM's capacity (deploy/README.md).
"""

import logging

from bot.replicas import expand_urls
from core.settings import Settings

logger = logging.getLogger(__name__)


def llm_capacity_warning(settings: Settings, vllm_replicas: int) -> str | None:
    """Why the app replicas could send vLLM more replies at once than it runs (`vllm_replicas` servers of
    `vllm_max_num_seqs` each); None when they fit."""
    admitted = settings.app_replicas * settings.llm_max_concurrent
    capacity = settings.vllm_max_num_seqs * max(vllm_replicas, 1)
    if admitted <= capacity:
        return None
    per_replica = capacity // settings.app_replicas
    remedy = f"set SUPPORTBOT_LLM_MAX_CONCURRENT to {per_replica} or less" if per_replica else "run fewer app replicas"
    return (
        f"{settings.app_replicas} app replica(s) x {settings.llm_max_concurrent} replies each "
        f"(SUPPORTBOT_APP_REPLICAS x SUPPORTBOT_LLM_MAX_CONCURRENT) = {admitted} may reach vLLM at once, more than "
        f"the {capacity} it runs ({max(vllm_replicas, 1)} replica(s) x --max-num-seqs {settings.vllm_max_num_seqs}, "
        f"SUPPORTBOT_VLLM_MAX_NUM_SEQS): the rest would queue inside vLLM, past the busy reply's bound; {remedy}, "
        "or add vLLM replicas"
    )


def check_llm_capacity(settings: Settings) -> None:
    """Log `llm_capacity_warning` for the vLLM servers configured now (a `dns+` name counts the addresses it
    resolves to at start, at least one). Blocking: it may resolve names."""
    replicas = 1 if settings.manages_vllm else len(expand_urls(settings.vllm_replica_urls))
    warning = llm_capacity_warning(settings, replicas)
    if warning is not None:
        logger.warning("%s", warning)
