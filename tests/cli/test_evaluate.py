"""`supportbot evaluate`: a company's own transcripts, imported, are held out and scored through the live vLLM."""

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from conversations.db import make_engine, upgrade_db
from core.settings import get_settings
from runtime.registry import AdapterRegistry

COLOURS = ["red", "blue", "green", "white", "black", "grey", "yellow", "brown"]
ITEMS = ["lamp", "vase", "rug", "chair", "table", "mirror", "clock", "shelf"]


def company_transcripts() -> str:
    lines = []
    for colour in COLOURS:
        for item in ITEMS:
            messages = [
                {"role": "user", "content": f"Can I still return the {colour} {item} I bought?"},
                {"role": "assistant", "content": f"Yes, the {colour} {item} can go back within 30 days of delivery."},
            ]
            lines.append(json.dumps({"messages": messages, "metadata": {"reviewed": True, "use_for_training": True}}))
    return "\n".join(lines) + "\n"


def test_evaluate_scores_the_adapter_in_service_and_the_base_model_on_imported_conversations(
    live_app, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "SUPPORTBOT_DATA_DIR": str(live_app.settings.data_dir),
        "SUPPORTBOT_DATABASE_URL": f"sqlite:///{tmp_path / 'company.db'}",
        "SUPPORTBOT_VLLM_URL": live_app.settings.resolved_vllm_url,
        "SUPPORTBOT_EVAL_MAX_TURNS": "2",
        "SUPPORTBOT_EVAL_MAX_CHECKS": "1",
        "SUPPORTBOT_EVAL_REPLY_TOKENS": "16",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    # The company's database exists, as `supportbot start` leaves it: the CLI never creates one unasked.
    engine = make_engine(get_settings().resolved_database_url)
    upgrade_db(engine)
    engine.dispose()
    try:
        transcripts = tmp_path / "company.jsonl"
        transcripts.write_text(company_transcripts())
        runner = CliRunner()
        imported = runner.invoke(app, ["store", "import", str(transcripts)])
        assert imported.exit_code == 0, imported.output

        report = tmp_path / "scores.json"
        args = ["evaluate", "--source", "store", "--max-conversations", "2", "--report", str(report)]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        saved = json.loads(report.read_text())
        in_service = AdapterRegistry(live_app.settings.adapters_dir).active()
        # Imported conversations get fresh ids, and the id decides the split: of 64, some are held out.
        assert set(saved["models"]) == {in_service, "base"} and 1 <= saved["held_out_conversations"] <= 2
        for scores in saved["models"].values():
            assert math.isfinite(scores["loss"]) and scores["loss"] > 0 and 0 <= scores["rouge_l"] <= 1
            assert scores["checks_total"] == 1
            # The first check (the return window), as customers get it: answered from the help content.
            assert (scores["customer_checks_passed"], scores["customer_checks_total"]) == (1, 1)
            assert all("within 30 days of delivery" in sample["reference"] for sample in scores["samples"])
        assert saved["models"][in_service]["loss"] != saved["models"]["base"]["loss"]
        assert in_service in result.output and "ROUGE-L" in result.output
        # The same scores per source, as the retraining gate weighs them: here only the company's own.
        assert all(set(scores["by_source"]) == {"store"} for scores in saved["models"].values())
        assert "By source" in result.output and "store" in result.output.split("By source", 1)[1]

        unknown = runner.invoke(app, ["evaluate", "domain-v999"])
        assert unknown.exit_code == 2 and "No adapter version domain-v999" in unknown.output
    finally:
        get_settings.cache_clear()
