"""A retrain learns every reviewed conversation the adapter in service has not learned, once, plus a replay
sample of what it knows; its time bound grows with the new data; the adapter records what it covered."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from sqlmodel import Session

from conversations import crud
from conversations.db import init_db, make_engine
from conversations.models import Role
from core.settings import Settings
from finetune.dataset import DatasetRecord
from finetune.plan import (
    TRAINED_ON,
    ConversationTokens,
    Selection,
    conversation_key,
    learned_keys,
    make_plan,
    measured_speed,
    pass_tokens,
    record_learned,
)
from finetune.sft import LoraRecipe, train_lora
from finetune.worker import prepare_run
from runtime.registry import ADAPTER_META, AdapterRegistry

TEST_ADAPTER = Path(__file__).parents[2] / "var" / "test-data" / "adapters" / "domain-v1"


def add_reviewed(engine, count: int, start: int = 0, correction: str | None = None) -> None:
    with Session(engine) as session:
        for index in range(start, start + count):
            # Letters, not digits: conversations differing only in numbers are near-duplicates the dataset drops.
            code = "".join(chr(ord("a") + int(digit)) for digit in str(index))
            conversation, _ = crud.create_conversation(session=session, channel="import")
            crud.add_message(session=session, conversation_id=conversation.id, role=Role.customer,
                             text=f"My parcel {code} has not arrived after {index % 9 + 3} days.")  # fmt: skip
            reply = crud.add_message(session=session, conversation_id=conversation.id, role=Role.bot,
                                     text=f"Sorry about parcel {code}: I asked the carrier to trace it.")  # fmt: skip
            if correction:
                crud.save_review(session=session, message_id=reply.id, rating="bad", corrected_text=correction,
                                 expected_version=0)  # fmt: skip
            crud.mark_conversation(session=session, conversation_id=conversation.id, reviewed=True,
                                   use_for_training=True, expected_version=0)  # fmt: skip


@pytest.fixture
def settings(tmp_path: Path, base_model_dir: Path) -> Settings:
    settings = Settings(data_dir=tmp_path, base_model=base_model_dir, database_url=f"sqlite:///{tmp_path / 'a.db'}")
    init_db(make_engine(settings.resolved_database_url))
    return settings


def serve_adapter(settings: Settings, learned: set[str] | None) -> Path:
    """A real adapter in service (its rank and layers match the recipe, so retraining starts from it), with what it
    learned recorded (None: an adapter from before that was recorded)."""
    registry = AdapterRegistry(settings.adapters_dir)
    target = registry.path("domain-v1")
    shutil.copytree(TEST_ADAPTER, target)
    (target / TRAINED_ON).unlink(missing_ok=True)
    if learned is not None:
        (target / TRAINED_ON).write_text(json.dumps({"conversations": sorted(learned)}))
    registry.promote("domain-v1")
    return target


def test_an_adapter_from_before_the_record_counts_its_seeds_as_learned(settings: Settings) -> None:
    from bot.domain import load_pack

    engine = make_engine(settings.resolved_database_url)
    add_reviewed(engine, 10)
    serve_adapter(settings, None)
    prepared = prepare_run(settings, load_pack(settings.domain_pack), engine, {"replay_min": 5, "replay_ratio": 0.0})
    store = [r for r in prepared.dataset.split("train") if r.source == "store"]
    assert sorted(r.id for r in prepared.selection.new) == sorted(r.id for r in store)
    assert len(prepared.selection.replay) == 5 and {r.source for r in prepared.selection.replay} == {"seed"}


def test_every_unlearned_conversation_is_selected_once_with_a_replay_sample(settings: Settings, base_model_dir) -> None:
    from bot.domain import load_pack

    engine = make_engine(settings.resolved_database_url)
    pack = load_pack(settings.domain_pack)
    add_reviewed(engine, 30)
    first = prepare_run(settings, pack, engine, {"replay_min": 4, "replay_ratio": 0.5})
    train = first.dataset.split("train")
    assert first.init_adapter is None and len(first.selection.new) == len(train)  # nothing in service: all new

    # The adapter in service learned everything but two company conversations (and the seeds).
    store = [record for record in train if record.source == "store"]
    unlearned = {conversation_key(record) for record in store[:2]}
    serve_adapter(settings, {conversation_key(record) for record in train} - unlearned)
    add_reviewed(engine, 6, start=100)
    second = prepare_run(settings, pack, engine, {"replay_min": 4, "replay_ratio": 0.5})
    new_keys = [conversation_key(record) for record in second.selection.new]
    added = [
        r for r in second.dataset.split("train") if r.source == "store" and conversation_key(r) not in first_keys(first)
    ]
    assert set(new_keys) == unlearned | {conversation_key(record) for record in added}
    assert len(new_keys) == len(set(new_keys))  # once each
    replay = [conversation_key(record) for record in second.selection.replay]
    assert len(replay) == max(4, -(-len(new_keys) // 2)) and not set(replay) & set(new_keys)
    assert {record.source for record in second.selection.replay} <= {"store", "seed"}
    plan = second.plan
    assert plan.new_conversations == len(new_keys) and plan.replay_conversations == len(replay)
    assert plan.new_by_source == {"store": len(new_keys)}
    assert plan.tokens > 0 and plan.steps >= 1 and plan.time_bound_s >= second.recipe.min_minutes * 60
    # Far more new data: a longer estimate, and a time bound that grows with it (not a fixed cap).
    add_reviewed(engine, 120, start=1000)
    third = prepare_run(settings, pack, engine, {"tokens_per_second": 60.0})
    assert third.plan.estimated_s > plan.estimated_s
    assert abs(third.plan.time_bound_s - third.plan.estimated_s * third.recipe.time_bound_factor) <= 2


def first_keys(prepared) -> set[str]:
    return {conversation_key(record) for record in prepared.dataset.split("train")}


def test_a_conversation_corrected_again_is_new_again(settings: Settings) -> None:
    from bot.domain import load_pack

    engine = make_engine(settings.resolved_database_url)
    pack = load_pack(settings.domain_pack)
    add_reviewed(engine, 12)
    before = prepare_run(settings, pack, engine)
    serve_adapter(settings, first_keys(before))
    assert prepare_run(settings, pack, engine).selection.new == []
    with Session(engine) as session:
        conversation_id = next(r.id for r in before.dataset.split("train") if r.source == "store")
        reply = [m for m in crud.list_messages(session=session, conversation_id=conversation_id) if m.role == Role.bot]
        crud.save_review(session=session, message_id=reply[0].id, rating="bad",
                         corrected_text="The carrier will call you tomorrow.", expected_version=0)  # fmt: skip
    after = prepare_run(settings, pack, engine)
    assert [record.id for record in after.selection.new] == [conversation_id]


def test_training_records_what_it_covered_and_inherits_what_it_started_from(tmp_path: Path, base_model_dir) -> None:
    conversations = [
        [
            {"role": "user", "content": f"Is order {n} shipped?"},
            {"role": "assistant", "content": f"Order {n} left today."},
        ]
        for n in range(5)
    ]
    keys = [f"store:{n}:x" for n in range(5)]
    recipe = LoraRecipe(max_steps=50, tokens_per_batch=128, max_seq_len=128, threads=2, autocast="bfloat16")
    result = train_lora(base_model_dir=base_model_dir, conversations=conversations, keys=keys,
                        output_dir=tmp_path / "a", recipe=recipe, init_adapter=TEST_ADAPTER)  # fmt: skip
    assert sorted(result.covered) == keys  # one pass covers every conversation
    assert result.steps == result.planned_steps < 5  # packed: several conversations a step, one pass
    assert result.packed and result.tokens_per_s > 0 and result.started_from == "domain-v1"
    assert record_learned(tmp_path / "a", tmp_path / "a", {"seed:old:y"}) == 5
    assert learned_keys(tmp_path / "a") == {*keys, "seed:old:y"}

    # A time bound too short for the pass: only the rows it trained on are recorded, the rest stay new.
    cut = train_lora(base_model_dir=base_model_dir, conversations=conversations * 4, keys=[f"k{i}" for i in range(20)],
                     output_dir=tmp_path / "b", recipe=recipe, time_bound_s=0.001)  # fmt: skip
    assert cut.steps == 1 and 0 < len(cut.covered) < 20


def test_the_plan_assumes_the_newest_measured_training_speed(tmp_path: Path) -> None:
    def adapter(name: str, meta: dict | None) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        if meta is not None:
            (folder / ADAPTER_META).write_text(json.dumps(meta))
        return folder

    newest = adapter("domain-v3", None)  # no record: the next one down is asked
    recorded = adapter("domain-v2", {"tokens_per_s": 180.5, "trained_tokens": 1000, "seconds": 100})
    older = adapter("domain-v1", {"trained_tokens": 3294, "seconds": 24.0})  # from before the speed was recorded
    assert measured_speed([newest, recorded, older]) == (180.5, "domain-v2")
    assert measured_speed([newest, older]) == (pytest.approx(137.25), "domain-v1")
    assert measured_speed([newest]) is None
    timeless = adapter("domain-v0", {"trained_tokens": 3294})  # tokens without a time say nothing of the speed
    assert measured_speed([newest, timeless]) is None


def test_conversations_that_share_a_system_text_pay_for_it_once_a_row() -> None:
    recipe = LoraRecipe(tokens_per_batch=1000, max_seq_len=300, min_seq_len=50)
    # Ten conversations of 200 tokens after the same 400-token system text: 800 tokens fit 3 of them a row.
    counts = [ConversationTokens(system="policies", system_tokens=400, rest=200) for _ in range(10)]
    assert pass_tokens(counts, recipe, share_system=False) == 10 * 300  # each cut at 300 tokens, system included
    assert pass_tokens(counts, recipe, share_system=True) == 10 * 200 + 4 * 400
    other = [*counts, ConversationTokens(system="other", system_tokens=100, rest=500)]
    assert pass_tokens(other, recipe, share_system=True) == 10 * 200 + 4 * 400 + 300 + 100


def test_a_pass_longer_than_the_target_cuts_every_conversation_shorter_and_says_so() -> None:
    recipe = LoraRecipe(tokens_per_batch=2048, max_seq_len=512, min_seq_len=64, target_minutes=1.0)
    counts = [ConversationTokens(system="policies", system_tokens=400, rest=600) for _ in range(100)]
    record = DatasetRecord(id="a", source="store", split="train", messages=[])
    selection = Selection(new=[record] * 100, replay=[])
    # At 1,000 tokens/s a minute is 60,000 tokens: the whole 512 a conversation would be 51,200 + 12,000.
    plan = make_plan(selection, counts, recipe, (1000.0, "domain-v1"), share_system=True)
    assert 64 <= plan.max_seq_len < 512 and plan.new_conversations == 100
    assert plan.estimated_s <= 60 and plan.tokens == pass_tokens(
        counts, replace(recipe, max_seq_len=plan.max_seq_len), True
    )
    longer = pass_tokens(counts, replace(recipe, max_seq_len=plan.max_seq_len + 1), True)
    assert longer / 1000 > 60  # the longest cut that fits
    assert any(f"cut at {plan.max_seq_len} tokens" in note for note in plan.notes)
    # Without a target, or with one the pass already fits, nothing is cut.
    assert make_plan(selection, counts, replace(recipe, target_minutes=0.0), (1000.0, "x"), True).max_seq_len == 512
    assert make_plan(selection, counts[:10], recipe, (1000.0, "x"), True).notes == []
    # A target no cut can meet stops at the recipe's shortest cut; the time bound still covers the estimate.
    slow = make_plan(selection, counts, recipe, (10.0, "x"), True)
    assert slow.max_seq_len == 64 and slow.time_bound_s >= min(slow.estimated_s, recipe.max_minutes * 60)
    assert any("still exceeds its 1-min target" in note for note in slow.notes)


def test_the_run_trains_at_the_cut_its_plan_chose(settings: Settings) -> None:
    from bot.domain import load_pack

    engine = make_engine(settings.resolved_database_url)
    add_reviewed(engine, 20)
    overrides = {"target_minutes": 0.01, "min_seq_len": 16, "tokens_per_second": 100.0}
    prepared = prepare_run(settings, load_pack(settings.domain_pack), engine, overrides)
    assert 16 <= prepared.plan.max_seq_len < 512 and prepared.recipe.max_seq_len == prepared.plan.max_seq_len
    assert prepared.plan.notes and len(prepared.selection.new) == len(prepared.dataset.split("train"))
