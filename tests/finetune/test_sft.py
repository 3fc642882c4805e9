"""Training data keeps the model's chat template and learns from assistant turns only."""

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from finetune.sft import (
    IGNORE_INDEX,
    Example,
    LoraRecipe,
    learning_rate_at,
    load_checkpoint,
    make_batches,
    tokenize_conversation,
)

CONVERSATION = [
    {"role": "system", "content": "You help customers of a shop."},
    {"role": "user", "content": "Where is my order?"},
    {"role": "assistant", "content": "Could you share your order number?"},
    {"role": "user", "content": "It is LL-104233."},
    {"role": "assistant", "content": "Thanks, I have noted LL-104233."},
]


@pytest.fixture(scope="module")
def tokenizer(base_model_dir: Path):
    return AutoTokenizer.from_pretrained(base_model_dir)


def learned_ids(example: Example) -> list[int]:
    return [token for token, label in zip(example.input_ids, example.labels, strict=True) if label != IGNORE_INDEX]


def test_only_assistant_turns_are_labelled(tokenizer) -> None:
    example = tokenize_conversation(tokenizer, CONVERSATION, max_seq_len=512)
    full = tokenizer.apply_chat_template(CONVERSATION, tokenize=True)
    full = full["input_ids"] if hasattr(full, "keys") else full
    assert example.input_ids == full
    learned = tokenizer.decode(learned_ids(example))
    assert "Could you share your order number?" in learned and "Thanks, I have noted LL-104233." in learned
    assert "Where is my order?" not in learned and "You help customers" not in learned


def test_conversation_without_assistant_turn_gives_no_example(tokenizer) -> None:
    assert tokenize_conversation(tokenizer, CONVERSATION[:2], max_seq_len=512) is None


def test_long_conversation_is_cut_between_messages(tokenizer) -> None:
    example = tokenize_conversation(tokenizer, CONVERSATION, max_seq_len=40)
    assert example is not None and len(example.input_ids) <= 40
    learned = tokenizer.decode(learned_ids(example))
    assert learned.strip().endswith("<|im_end|>")


def test_a_first_reply_past_the_limit_is_kept_when_asked_and_the_system_text_need_not_count(tokenizer) -> None:
    system_only = tokenize_conversation(tokenizer, CONVERSATION[:1], max_seq_len=512, system_counts=False)
    assert system_only is None  # nothing to learn from
    whole = tokenize_conversation(tokenizer, CONVERSATION, max_seq_len=512)
    prefix = tokenize_conversation(tokenizer, CONVERSATION, max_seq_len=512, system_counts=False).prefix
    assert 0 < prefix < len(whole.input_ids)
    first_reply_ends = whole.labels.index(IGNORE_INDEX, whole.labels.index(next(x for x in whole.labels if x != -100)))
    # A limit that ends inside the first reply: left out by default, cut after that reply when asked.
    limit = first_reply_ends - 3
    assert tokenize_conversation(tokenizer, CONVERSATION, max_seq_len=limit) is None
    kept = tokenize_conversation(tokenizer, CONVERSATION, max_seq_len=limit, keep_first_reply=True)
    assert "Could you share your order number?" in tokenizer.decode(learned_ids(kept))
    assert "Thanks, I have noted LL-104233." not in tokenizer.decode(learned_ids(kept))
    # A limit on the tokens after the system text: exactly those of the whole conversation fit, where the same
    # limit on every token cuts the last reply.
    rest = len(whole.input_ids) - prefix
    assert (
        tokenize_conversation(tokenizer, CONVERSATION, max_seq_len=rest, system_counts=False).input_ids
        == whole.input_ids
    )
    assert len(tokenize_conversation(tokenizer, CONVERSATION, max_seq_len=rest).input_ids) < len(whole.input_ids)


def test_batches_respect_the_token_budget_and_keep_every_example() -> None:
    examples = [Example(input_ids=[1] * n, labels=[1] * n) for n in (5, 300, 40, 41, 200, 7, 512)]
    batches = make_batches(examples, tokens_per_batch=600, seed=1)
    assert sorted(len(e.input_ids) for batch in batches for e in batch) == sorted(len(e.input_ids) for e in examples)
    assert all(max(len(e.input_ids) for e in batch) * len(batch) <= 600 for batch in batches)


def test_learning_rate_warms_up_then_decays() -> None:
    recipe = LoraRecipe(max_steps=100, warmup_ratio=0.1, learning_rate=1e-3)
    rates = [learning_rate_at(step, 100, recipe) for step in range(100)]
    assert rates[0] < rates[9] == pytest.approx(1e-3)
    assert rates[50] < rates[10] and rates[99] < 1e-4


@pytest.mark.parametrize("bad", [{"rank": 0}, {"dropout": 1.0}, {"max_steps": 0}, {"tokens_per_batch": 10}])
def test_recipe_refuses_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError):
        LoraRecipe(**bad)


class _Planted:
    """A pickled object that would run a command when unpickled (what a planted checkpoint would hold)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_holding_code_is_refused_and_a_real_one_loads(tmp_path: Path) -> None:
    import pickle

    import torch

    real = {"lora": {"w": torch.ones(2)}, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]},
            "state": {"step": 3, "losses": [1.5, 1.2], "best_loss": None, "evals": [{"step": 2, "loss": 1.3}]},
            "best": None}  # fmt: skip
    torch.save(real, tmp_path / "checkpoint.pt")
    loaded = load_checkpoint(tmp_path / "checkpoint.pt")
    assert loaded["state"]["step"] == 3 and torch.equal(loaded["lora"]["w"], torch.ones(2))

    marker = tmp_path / "code-ran"
    torch.save({"state": _Planted(marker)}, tmp_path / "planted.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(tmp_path / "planted.pt")
    assert not marker.exists()
