"""Settings refuse default secrets outside local mode and derive paths from the data directory."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from core.settings import Settings


def test_default_secret_is_refused_in_production() -> None:
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        Settings(mode="production")
    assert Settings(mode="production", secret_key="s3cret-from-vault").mode == "production"


def test_embedded_defaults(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.resolved_database_url == f"sqlite:///{tmp_path.resolve() / 'supportbot.db'}"
    assert settings.manages_vllm and settings.resolved_vllm_url == "http://127.0.0.1:8001"
    assert settings.base_model_dir == tmp_path / "models" / "smollm2-135m-instruct"
