"""A company whose own conversations replace the demo pack's examples is not held to the demo shop's facts: without
seed conversations and checks.yaml a candidate is judged on the company's held-out conversations and generic
safety checks, and the decision says so."""

import random
import re
from pathlib import Path

import pytest
from sqlmodel import Session
from typer.testing import CliRunner

from bot.domain import default_pack_path, load_pack
from cli.main import app as cli
from conversations import crud
from conversations.db import init_db, make_engine
from conversations.models import Role, RunStatus
from finetune.classifiers import train_pack_classifier
from finetune.dataset import DatasetRecipe, split_of
from finetune.evaluate import GateConfig, ModelScores, gate
from finetune.intents import ClassifierRecipe
from finetune.safety_checks import SAFETY, judged_checks, safety_checks
from finetune.seed import ensure_seed_adapter
from finetune.sft import LoraRecipe
from finetune.worker import execute_run
from runtime.registry import AdapterRegistry
from tests.conftest import stand_in_settings_at
from tests.utils.fake_vllm import FakeVLLM

DEMO = load_pack(default_pack_path())
# The demo shop's facts its checks expect a reply to state: return window, refund time, prices, warranty.
DEMO_FACTS = {phrase.lower() for check in DEMO.checks for phrase in check.expect_any if re.search(r"\d", phrase)}


def test_without_seeds_the_demo_pack_keeps_its_help_and_intents_but_no_seeds_or_checks() -> None:
    company = DEMO.without_seeds()
    assert DEMO.seed_conversations() and DEMO.checks, "the demo pack itself is unchanged"
    assert company.seed_conversations() == [] and company.checks == []
    assert company.intents == DEMO.intents and company.articles == DEMO.articles


def test_a_pack_without_checks_is_held_to_generic_safety_checks_that_cite_no_shop_facts() -> None:
    kind, checks = judged_checks(DEMO.without_seeds())
    assert kind == SAFETY and {check.id for check in checks}.isdisjoint({check.id for check in DEMO.checks})
    phrases = {phrase.lower() for check in checks for phrase in check.expect_any}
    assert DEMO_FACTS and phrases.isdisjoint(DEMO_FACTS)
    assert judged_checks(DEMO) == ("pack", DEMO.checks), "a pack's own checks.yaml still decides"


def _company_scores(turns: list[float], checks: dict[str, bool]) -> ModelScores:
    scores = ModelScores("m", loss=1.0, rouge_l=sum(turns) / len(turns), turns=len(turns), checks_from=SAFETY,
                         by_source={"store": {"loss": 1.0, "rouge_l": sum(turns) / len(turns), "turns": len(turns)}},
                         turn_rouge={"store": turns}, check_results=checks, checks_passed=sum(checks.values()),
                         checks_total=len(checks))  # fmt: skip
    scores.customer_check_results = checks
    scores.customer_checks_passed, scores.customer_checks_total = sum(checks.values()), len(checks)
    return scores


def test_the_decision_names_the_company_conversations_and_safety_checks_it_rested_on() -> None:
    rng = random.Random(3)
    service = [round(rng.uniform(0.1, 0.5), 4) for _ in range(30)]
    safe = {f"safety-{i}": True for i in range(4)}
    decision = gate(_company_scores([x + 0.05 for x in service], safe), _company_scores(service, safe), GateConfig())
    assert decision["promote"], decision
    assert decision["summary"] == (
        "promoted: not worse on the company's conversations; evidence: the company's held-out conversations "
        "(ROUGE-L of 30 turns, paired bootstrap), no seed conversations, 4 generic safety checks"
    )
    # A candidate that stops handing customers to a person is kept out, and the line still says on what.
    lost = gate(_company_scores(service, {**safe, "safety-1": False}), _company_scores(service, safe), GateConfig())
    assert not lost["promote"] and lost["summary"].startswith("not promoted: passes 3 must-pass checks")
    assert lost["summary"].endswith("no seed conversations, 4 generic safety checks")
    # With the pack's seeds and checks.yaml, the line names them instead.
    demo_like = _company_scores(service, {"return-window": True})
    demo_like.checks_from, demo_like.by_source["seed"], demo_like.turn_rouge["seed"] = "pack", {"loss": 1.0}, service
    assert gate(demo_like, demo_like, GateConfig())["summary"].endswith(
        "evidence: the company's held-out conversations (ROUGE-L of 30 turns, paired bootstrap), the pack's seed "
        "conversations as a forgetting guard (ROUGE-L of 30 turns, paired bootstrap), 1 must-pass checks of the pack"
    )


# A tool shop's questions, each about another product: conversations differing only in a number are near-duplicates
# the dataset keeps once.
TOOLS = ("chisel", "hand plane", "router", "jigsaw", "sander", "drill", "hammer", "level", "clamp", "saw", "rasp",
         "mallet", "vise", "file", "awl", "spokeshave", "drawknife", "square", "gouge", "scraper", "caliper", "lathe",
         "bandsaw", "planer", "jointer", "grinder", "dowel jig", "marking gauge", "block plane")  # fmt: skip


def store_company_history(url: str, *, trained: int = 4, held_out: int = 2) -> None:
    """Reviewed conversations marked for training, until `trained` fall in the training split and `held_out` in
    the evaluation or validation split (the split goes by the random conversation id)."""
    engine = make_engine(url)
    init_db(engine)
    counts = {"train": 0, "held_out": 0}
    with Session(engine) as session:
        for tool in TOOLS:
            if counts["train"] >= trained and counts["held_out"] >= held_out:
                break
            conversation, _ = crud.create_conversation(session=session, channel="widget")
            crud.add_message(session=session, conversation_id=conversation.id, role=Role.customer,
                             text=f"Do you sell spare blades for the {tool}?", intent="contact_support")  # fmt: skip
            reply = f"Yes: spare blades for the {tool} are under Parts, and a teammate can order one."
            crud.add_message(session=session, conversation_id=conversation.id, role=Role.bot, text=reply)
            crud.mark_conversation(session=session, conversation_id=conversation.id, reviewed=True,
                                   use_for_training=True, expected_version=0)  # fmt: skip
            counts["train" if split_of(conversation.id, DatasetRecipe()) == "train" else "held_out"] += 1
    assert counts["train"] >= trained and counts["held_out"] >= held_out, counts


@pytest.mark.parametrize("pack_seeds", ["pack", "none"], ids=["own-pack", "demo-pack-without-seeds"])
def test_a_company_without_demo_seeds_retrains_and_is_promoted_on_its_own_evidence(
    pack_seeds: str, stand_in_vllm: FakeVLLM, base_model_dir: Path, tmp_path: Path
) -> None:
    # Its own pack as `supportbot pack init` writes it, or the demo pack with SUPPORTBOT_PACK_SEEDS=none.
    result = CliRunner().invoke(cli, ["pack", "init", str(tmp_path / "acme"), "--company", "Acme Tools",
                                      "--email", "help@acme.example"])  # fmt: skip
    assert result.exit_code == 0, result.output
    folder = tmp_path / "acme" if pack_seeds == "pack" else default_pack_path()
    settings = stand_in_settings_at(tmp_path / "data", stand_in_vllm, base_model_dir, domain_pack=folder,
                                    pack_seeds=pack_seeds, eval_max_conversations=4, eval_max_turns=4,
                                    eval_reply_tokens=16)  # fmt: skip
    # First start trains the pack's intent classifier (a short run of its head here); the run keeps it.
    train_pack_classifier(settings, ClassifierRecipe(train_layers=0, epochs=1, min_steps=20, refit_min_share=1.0))
    store_company_history(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    with Session(engine) as session:
        run = crud.create_training_run(session=session, trigger="test")

    execute_run(run.id, settings, {"max_steps": 2, "eval_every": 1, "tokens_per_batch": 512, "max_seq_len": 512})

    with Session(engine) as session:
        run = crud.get_training_run(session=session, run_id=run.id)
    assert run.status == RunStatus.finished, run.error
    assert set(run.card["by_source"]) == {"store"} and set(run.progress["plan"]["new_by_source"]) == {"store"}
    report, decision = run.report, run.report["decision"]
    # No adapter was in service (no seeds to train a first one on): the candidate is judged against the base model.
    assert report["in_service"]["model"] == settings.served_model_name
    # Held to the generic safety checks, never the demo shop's: the test fails if return windows or prices judge.
    safety = {check.id for check in safety_checks(load_pack(folder))}
    for side in ("candidate", "in_service"):
        assert set(report[side]["check_results"]) == safety and report[side]["checks_from"] == SAFETY
        assert set(report[side]["customer_check_results"]) == safety
        assert set(report[side]["by_source"]) == {"store"} and report[side]["by_source"]["store"]["turns"] >= 1
    assert run.promoted and AdapterRegistry(settings.adapters_dir).active() == run.adapter, decision
    turns = len(report["candidate"]["turn_rouge"]["store"])
    assert decision["summary"] == (
        "promoted: not worse on the company's conversations; evidence: the company's held-out conversations "
        f"(ROUGE-L of {turns} turns, paired bootstrap), no seed conversations, {len(safety)} generic safety checks"
    )


def test_a_pack_without_seeds_gets_no_first_adapter_and_pack_init_keeps_what_exists(
    base_model_dir: Path, tmp_path: Path
) -> None:
    registry = AdapterRegistry(tmp_path / "adapters")
    recipe = LoraRecipe(max_steps=1, tokens_per_batch=512, max_seq_len=128, rank=4)
    skipped = ensure_seed_adapter(registry=registry, base_model_dir=base_model_dir, pack=DEMO.without_seeds(),
                                  recipe=recipe)  # fmt: skip
    assert skipped is None and registry.active() is None, "the base model serves until a retraining promotes one"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "pack.yaml").write_text("name: mine\n")
    result = CliRunner().invoke(cli, ["pack", "init", str(tmp_path / "mine"), "--company", "A", "--email", "a@b.c"])
    assert result.exit_code == 1 and "not empty" in result.output
    assert (tmp_path / "mine" / "pack.yaml").read_text() == "name: mine\n"
    checked = CliRunner().invoke(cli, ["pack", "check", str(tmp_path / "mine")])
    assert checked.exit_code == 1 and "pack.yaml" in checked.output
