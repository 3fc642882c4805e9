"""The learning loop end to end: reviewed conversations -> dataset -> new adapter -> evaluation ->
promotion into the running vLLM and app without a restart -> rollback."""

import time
from pathlib import Path

import httpx
from sqlmodel import Session

from conversations import crud
from conversations.db import init_db, make_engine
from conversations.models import Role, RunStatus
from finetune.dataset import Dataset, DatasetRecipe, split_of
from finetune.plan import learned_keys
from finetune.worker import execute_run, run_folder
from runtime.registry import AdapterRegistry
from tests.utils.conversation import bot_reply, open_conversation, send

CORRECTION = "You can return any item within 30 days of delivery; the return label costs $5.95."


ITEMS = ("lamp", "kettle", "chair", "rug", "mirror", "blender", "desk", "toaster", "pillow", "shelf", "vase", "fan")


def seed_reviewed_conversations(url: str, in_training: int = 4) -> None:
    """Reviewed, corrected conversations until `in_training` of them fall in the training split (the split goes by
    the random conversation id, so a fixed number could all land in validation); each asks about a different item,
    since conversations differing only in numbers are near-duplicates the dataset keeps once."""
    engine = make_engine(url)
    init_db(engine)
    trained = 0
    with Session(engine) as session:
        for item in ITEMS:
            if trained == in_training:
                break
            conversation, _ = crud.create_conversation(session=session, channel="widget")
            crud.add_message(session=session, conversation_id=conversation.id, role=Role.customer,
                             text=f"How long do I have to send back the {item}?", intent="return_item")  # fmt: skip
            reply = crud.add_message(session=session, conversation_id=conversation.id, role=Role.bot,
                                     text="You have 90 days, no questions asked!")  # fmt: skip
            crud.save_review(session=session, message_id=reply.id, rating="bad", corrected_text=CORRECTION,
                             expected_version=0)  # fmt: skip
            crud.mark_conversation(session=session, conversation_id=conversation.id, reviewed=True,
                                   use_for_training=True, expected_version=0)  # fmt: skip
            trained += split_of(conversation.id, DatasetRecipe()) == "train"
    assert trained == in_training, "too few items to fill the training split"


def wait_for_model(client: httpx.Client, adapter: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        conversation_id, headers = open_conversation(client)
        reply = bot_reply(send(client, conversation_id, headers, "How long do I have to return a lamp?"))
        if reply["model"] == adapter or time.monotonic() > deadline:
            return reply
        time.sleep(3)


def test_retrain_evaluate_promote_and_roll_back(live_app, client: httpx.Client, tmp_path: Path) -> None:
    settings = live_app.settings.model_copy(
        update={
            "database_url": f"sqlite:///{tmp_path / 'store.db'}",
            "vllm_url": live_app.settings.resolved_vllm_url,
            "eval_max_conversations": 3,
            "eval_max_turns": 3,
            "eval_max_checks": 2,
            "eval_reply_tokens": 24,
        }
    )
    seed_reviewed_conversations(settings.resolved_database_url)
    registry = AdapterRegistry(settings.adapters_dir)
    in_service = registry.active()
    engine = make_engine(settings.resolved_database_url)
    with Session(engine) as session:
        run = crud.create_training_run(session=session, trigger="test")

    execute_run(
        run.id,
        settings,
        {"max_steps": 2, "eval_every": 1, "tokens_per_batch": 512, "max_seq_len": 512},
        # The corrections are also (rejected, chosen) pairs: a short DPO stage follows SFT.
        {"min_pairs": 1, "max_steps": 2, "batch_size": 1},
    )

    with Session(engine) as session:
        run = crud.get_training_run(session=session, run_id=run.id)
    assert run.status == RunStatus.finished, run.error
    assert run.card["by_source"]["store"] >= 1 and run.card["corrected_turns"] >= 1
    dataset = Dataset.load(next((settings.data_dir / "datasets").glob(f"{run.dataset_hash[:16]}*")))
    store_replies = [m["content"] for r in dataset.records if r.source == "store" for m in r.messages]
    assert CORRECTION in store_replies and "You have 90 days, no questions asked!" not in store_replies
    assert run.progress["curve"] and run.progress["validation"]
    # The plan counted the reviewed conversations as new (the test adapter predates the record of what adapters
    # learned: its seeds count as learned), and the candidate records what it learned: the seeds it started from
    # and what its two steps covered; the conversations it did not reach stay new for the next run.
    plan, learned = run.progress["plan"], learned_keys(registry.path(run.adapter))
    assert set(plan["new_by_source"]) == {"store"} and plan["replay_conversations"] >= 1
    assert plan["time_bound_s"] >= 60
    covered = run.progress["learned"]["covered"]
    assert 0 < covered < plan["new_conversations"] + plan["replay_conversations"]
    assert any(key.startswith("seed:") for key in learned) and len(learned) >= covered
    assert run.progress["preference"]["step"] == 2
    preference = run.report["preference"]
    assert preference["method"] == "dpo" and preference["pairs"] >= 1 and preference["steps"] == 2
    assert (run_folder(settings, run) / "sft-adapter").is_dir(), "the SFT stage's adapter is kept"
    report = run.report
    assert report["candidate"]["model"] == run.adapter and report["in_service"]["model"] == in_service
    for side in ("candidate", "in_service"):
        assert report[side]["loss"] > 0 and report[side]["rouge_l"] is not None
        assert report[side]["checks_total"] == 2
        # As customers get them, both checks are answered from the help content, whatever the model says.
        assert (report[side]["customer_checks_passed"], report[side]["customer_checks_total"]) == (2, 2), report[side]
        assert report[side]["by_source"]["seed"]["turns"] >= 1 and report[side]["by_source"]["seed"]["loss"] > 0
    assert report["decision"]["reasons"]

    # The gate's decision is carried out: its verdict on two steps of training is tested in test_promotion_gate.py;
    # here what matters is that the run does what the decision says, whichever way it went.
    assert run.promoted is bool(report["decision"]["promote"])
    assert registry.active() == (run.adapter if run.promoted else in_service)
    # Promoted by the gate or by hand, the new adapter answers customers without a restart.
    if not run.promoted:
        registry.promote(run.adapter)
    assert wait_for_model(client, run.adapter)["model"] == run.adapter
    # Rollback is the same switch back.
    registry.promote(in_service)
    assert wait_for_model(client, in_service)["model"] == in_service
