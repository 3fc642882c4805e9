"""Adapter versions are never reused, interrupted runs are invisible, and promotion is explicit."""

import json
from pathlib import Path

import pytest

from finetune.registry import AdapterNotFound, AdapterRegistry
from finetune.sft import ADAPTER_META


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
