"""Packed training rows: several conversations share a row and none of them sees another's tokens."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from finetune.attention import segments, use_packed_attention
from finetune.sft import IGNORE_INDEX, collate, collate_packed, load_examples, pack_rows

CONVERSATIONS = [
    [{"role": "user", "content": "Where is my order LL-104233?"},
     {"role": "assistant", "content": "It left the warehouse yesterday and arrives on Friday."}],
    [{"role": "user", "content": "My lamp arrived broken."},
     {"role": "assistant", "content": "Sorry! Send a photo within 7 days and we replace it."},
     {"role": "user", "content": "Done, I sent it."},
     {"role": "assistant", "content": "Thanks, a new lamp ships today."}],
    [{"role": "user", "content": "Can I pay with PayPal?"},
     {"role": "assistant", "content": "Yes, we accept PayPal and all major cards."}],
]  # fmt: skip


@pytest.fixture(scope="module")
def model_and_examples(base_model_dir: Path):
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32).eval()
    return model, load_examples(tokenizer, CONVERSATIONS, 512, keys=["a", "b", "c"])


def test_packed_logits_equal_each_conversation_alone(model_and_examples) -> None:
    model, examples = model_and_examples
    ids, _, positions = collate_packed(examples)
    with torch.inference_mode():
        packed = model(input_ids=ids, position_ids=positions, use_cache=False).logits[0]
        start = 0
        for example in examples:
            alone = model(input_ids=torch.tensor([example.input_ids]), use_cache=False).logits[0]
            end = start + len(example.input_ids)
            torch.testing.assert_close(packed[start:end], alone, atol=2e-4, rtol=1e-4)
            start = end


def test_without_restarting_positions_the_conversations_would_mix(model_and_examples) -> None:
    # The check above can fail: one causal row over the same tokens changes the later conversations' logits.
    model, examples = model_and_examples
    ids, _, _ = collate_packed(examples)
    with torch.inference_mode():
        mixed = model(input_ids=ids, use_cache=False).logits[0]
        last = examples[-1]
        alone = model(input_ids=torch.tensor([last.input_ids]), use_cache=False).logits[0]
    assert (mixed[-len(last.input_ids) :] - alone).abs().max() > 1e-2


def test_no_target_crosses_a_boundary_and_rows_hold_the_budget(model_and_examples) -> None:
    _, examples = model_and_examples
    ids, labels, positions = collate_packed(examples)
    starts = (positions[0] == 0).nonzero().flatten().tolist()
    assert len(starts) == len(examples)
    assert all(labels[0, start] == IGNORE_INDEX for start in starts)  # the previous one's last token predicts nothing
    assert int((labels != IGNORE_INDEX).sum()) == sum(
        sum(label != IGNORE_INDEX for label in example.labels) for example in examples
    )
    budget = max(len(example.input_ids) for example in examples) + 5
    rows = pack_rows(examples * 4, budget, seed=0)
    assert all(sum(len(e.input_ids) for e in row) <= budget for row in rows)
    assert sorted(e.key for row in rows for e in row) == sorted(["a", "b", "c"] * 4)


def test_attention_one_conversation_at_a_time_gives_each_conversation_alone(base_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    examples = load_examples(tokenizer, CONVERSATIONS, 512)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32).eval()
    alone = [model(input_ids=torch.tensor([e.input_ids]), use_cache=False).logits[0] for e in examples]
    use_packed_attention(model)
    ids, _, positions = collate_packed(examples)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    padded_ids, _, mask = collate(examples, pad)
    with torch.inference_mode():
        packed = model(input_ids=ids, position_ids=positions, use_cache=False).logits[0]
        padded = model(input_ids=padded_ids, attention_mask=mask, use_cache=False).logits
    start = 0
    for row, (example, expected) in enumerate(zip(examples, alone, strict=True)):
        end = start + len(example.input_ids)
        torch.testing.assert_close(packed[start:end], expected, atol=2e-4, rtol=1e-4)
        torch.testing.assert_close(padded[row, : len(example.input_ids)], expected, atol=2e-4, rtol=1e-4)
        start = end


def test_a_row_splits_where_positions_restart_or_padding_begins() -> None:
    positions = torch.tensor([0, 1, 2, 0, 1, 0, 1, 2, 3])
    assert segments(positions, None, 9) == [(0, 3), (3, 5), (5, 9)]
    right_padded = torch.tensor([1, 1, 1, 1, 0, 0])
    assert segments(torch.arange(6), right_padded, 6) == [(0, 4)]
    assert segments(None, torch.tensor([0, 0, 1, 1, 1]), 5) == [(2, 5)]
