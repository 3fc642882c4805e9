"""Packed training rows: several conversations share a row and none of them sees another's tokens."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from finetune.attention import segments, use_packed_attention
from finetune.sft import IGNORE_INDEX, collate, collate_packed, load_examples, pack_rows, row_tokens

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


SYSTEMS = ["You are Lumen & Loom's support assistant. Returns: 30 days from delivery, unused items only.",
           "You are Lumen & Loom's support assistant. Shipping: 3-5 working days in the EU."]  # fmt: skip


def test_rows_sharing_a_system_text_give_each_conversation_what_it_gets_alone(base_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    # Two system texts over three conversations each: rows hold each text once, and a conversation whose text
    # is shared starts after it.
    conversations = [[{"role": "system", "content": SYSTEMS[i % 2]}, *CONVERSATIONS[i % 3]] for i in range(6)]
    examples = load_examples(tokenizer, conversations, 64, keys=[str(i) for i in range(6)], system_counts=False)
    assert all(example.prefix > 0 for example in examples)
    rows = pack_rows(examples, 4096, seed=0, share_system=True)
    assert len(rows) == 1 and sorted(e.key for e in rows[0]) == [str(i) for i in range(6)]
    row = rows[0]
    ids, labels, positions = collate_packed(row)
    saved = 2 * examples[0].prefix + 2 * examples[1].prefix  # each text held once instead of three times
    assert ids.shape[1] == row_tokens(row) == sum(len(e.input_ids) for e in examples) - saved
    assert int((labels != IGNORE_INDEX).sum()) == sum(sum(x != IGNORE_INDEX for x in e.labels) for e in examples)

    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32).eval()
    alone = [model(input_ids=torch.tensor([e.input_ids]), use_cache=False).logits[0] for e in row]
    use_packed_attention(model)
    with torch.inference_mode():
        packed = model(input_ids=ids, position_ids=positions, use_cache=False).logits[0]
    start = 0
    for index, (example, expected) in enumerate(zip(row, alone, strict=True)):
        shared = (
            index > 0
            and example.prefix > 0
            and row[index - 1].input_ids[: example.prefix] == example.input_ids[: example.prefix]
        )
        skip = example.prefix if shared else 0
        end = start + len(example.input_ids) - skip
        torch.testing.assert_close(packed[start:end], expected[skip:], atol=2e-4, rtol=1e-4)
        start = end
    assert start == ids.shape[1]


def test_a_shared_system_text_gets_the_gradient_of_every_conversation_that_uses_it(base_model_dir: Path) -> None:
    from peft import LoraConfig, get_peft_model

    from finetune.sft import assistant_loss

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    conversations = [[{"role": "system", "content": SYSTEMS[0]}, *conversation] for conversation in CONVERSATIONS]
    examples = load_examples(tokenizer, conversations, 64, system_counts=False)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    use_packed_attention(model)

    def gradients(row: list) -> dict:
        model.zero_grad()
        ids, labels, positions = collate_packed(row)
        assistant_loss(model, ids, None, labels, positions).backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}

    shared = gradients(examples)
    # The same rows without sharing: each conversation with its own copy of the system text.
    own = gradients([examples[0]]), gradients([examples[1]]), gradients([examples[2]])
    tokens = [sum(x != IGNORE_INDEX for x in e.labels[1:]) for e in examples]
    for name, grad in shared.items():
        expected = sum(g[name] * n for g, n in zip(own, tokens, strict=True)) / sum(tokens)
        torch.testing.assert_close(grad, expected, atol=1e-5, rtol=1e-3)
