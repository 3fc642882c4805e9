"""The start-up warning when every app replica's LLM admission bound together exceeds what vLLM runs at once."""

import logging

import pytest

from core.settings import Settings
from serving.capacity import check_llm_capacity, llm_capacity_warning


def settings(**values: object) -> Settings:
    return Settings(vllm_urls=["http://vllm-a:8000", "http://vllm-b:8000"], **values)  # type: ignore[arg-type]


def test_the_deploy_files_sizes_fit() -> None:
    # deploy/k8s: at most 20 app pods (the HPA) x 16, against 2 vLLM pods x --max-num-seqs 256.
    assert llm_capacity_warning(settings(app_replicas=20, llm_max_concurrent=16, vllm_max_num_seqs=256), 2) is None
    assert llm_capacity_warning(settings(app_replicas=32, llm_max_concurrent=16, vllm_max_num_seqs=256), 2) is None


def test_more_than_vllm_runs_is_a_warning_naming_the_bound_that_fits() -> None:
    warning = llm_capacity_warning(settings(app_replicas=40, llm_max_concurrent=16, vllm_max_num_seqs=256), 2)
    assert warning is not None
    assert "40 app replica(s) x 16 replies each" in warning and "= 640" in warning and "the 512 it runs" in warning
    assert "SUPPORTBOT_LLM_MAX_CONCURRENT to 12 or less" in warning
    # No vLLM replica resolves at start: counted as one, the strictest reading.
    assert "the 256 it runs" in (llm_capacity_warning(settings(app_replicas=20, llm_max_concurrent=16), 0) or "")
    too_many = llm_capacity_warning(settings(app_replicas=600, llm_max_concurrent=1, vllm_max_num_seqs=256), 2)
    assert too_many is not None and "run fewer app replicas" in too_many


def test_the_check_counts_the_configured_replicas(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="serving.capacity"):
        check_llm_capacity(settings(app_replicas=20, llm_max_concurrent=16, vllm_max_num_seqs=256))
        assert not caplog.records
        check_llm_capacity(settings(app_replicas=20, llm_max_concurrent=16, vllm_max_num_seqs=128))
    [record] = caplog.records
    assert "the 256 it runs (2 replica(s)" in record.getMessage()
