"""Adapter versions are never reused, interrupted runs are invisible, and promotion is explicit and all-or-nothing."""

import json
from pathlib import Path

import pytest

from bot.vllm_admin import AdapterLoadFailed
from runtime.registry import ADAPTER_META, AdapterNotFound, AdapterRegistry, promote
from tests.utils.fake_vllm import FakeVLLM


def make_adapter(root: Path, name: str) -> None:
    (root / name).mkdir(parents=True)
    (root / name / ADAPTER_META).write_text(json.dumps({"steps": 1}))


def test_versions_names_and_promotion(tmp_path: Path) -> None:
    registry = AdapterRegistry(tmp_path)
    assert registry.versions() == [] and registry.active() is None and registry.next_name() == "domain-v1"
    make_adapter(tmp_path, "domain-v1")
    make_adapter(tmp_path, "domain-v10")
    make_adapter(tmp_path, "domain-v2")
    (tmp_path / "domain-v11.partial").mkdir()  # an interrupted training run
    assert registry.versions() == ["domain-v1", "domain-v2", "domain-v10"]
    assert registry.next_name() == "domain-v12"
    registry.promote("domain-v2")
    assert registry.active() == "domain-v2"
    assert AdapterRegistry(tmp_path).active() == "domain-v2"
    with pytest.raises(AdapterNotFound):
        registry.promote("domain-v11")


def test_promote_loads_into_vllm_first_and_a_refusal_leaves_the_version_in_service(tmp_path: Path) -> None:
    registry = AdapterRegistry(tmp_path)
    for name in ("domain-v1", "domain-v2", "domain-v3"):
        make_adapter(tmp_path, name)
    assert promote(registry, "domain-v1") is None
    server = FakeVLLM("one").start()
    try:
        assert promote(registry, "domain-v2", serve_on=server.url) == "domain-v1"
        assert registry.active() == "domain-v2" and "domain-v2" in server.adapters
    finally:
        server.stop()
    for unreachable in (server.url, [server.url]):
        with pytest.raises(AdapterLoadFailed, match="vLLM could not load domain-v3"):
            promote(registry, "domain-v3", serve_on=unreachable)
    with pytest.raises(AdapterNotFound):
        promote(registry, "domain-v9", serve_on=server.url)
    assert registry.active() == "domain-v2" and registry.previous() == "domain-v1"
