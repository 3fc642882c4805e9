"""Causal attention computed one conversation at a time, for rows that pack several conversations.

A packed row given to transformers' own attention gets a block-diagonal mask over the whole row: every token
is scored against every other one and most scores are then thrown away, and the CPU's flash kernel can no
longer skip the masked half. Here each conversation (a run of positions that count up from 0, cut at padding)
gets plain causal attention of its own, so the work grows with each conversation's length, not the row's.
A conversation whose positions start at p > 0 shares a system text: it also attends to the first p tokens of the
last conversation in its row that started at 0 (see finetune/sft.py, collate_packed).
"""

import torch
import torch.nn.functional as F

NAME = "supportbot_packed"
"""The name this attention is registered under in transformers (`model.config._attn_implementation`)."""


def segments(positions: torch.Tensor | None, mask: torch.Tensor | None, length: int) -> list[tuple[int, int]]:
    """(start, end) of each conversation in one row: a new one starts where the positions do not count up by
    one, and tokens the mask leaves out (padding) belong to none."""
    valid = [True] * length if mask is None else mask.bool().tolist()
    counted = None if positions is None else positions.tolist()
    spans: list[tuple[int, int]] = []
    start = None
    for index in range(length):
        restarts = counted is not None and index > 0 and counted[index] != counted[index - 1] + 1
        if start is not None and (not valid[index] or restarts):
            spans.append((start, index))
            start = None
        if valid[index] and start is None:
            start = index
    if start is not None:
        spans.append((start, length))
    return spans


def packed_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers' attention-function signature: query (batch, heads, length, dim), key and value with
    `num_key_value_groups` times fewer heads; returns (output of shape (batch, length, heads, dim), None)."""
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    positions = kwargs.get("position_ids")
    output = torch.zeros_like(query)
    for row in range(query.shape[0]):
        row_positions = None if positions is None else positions[min(row, positions.shape[0] - 1)]
        row_mask = None if attention_mask is None else attention_mask[row]
        root = None  # where the last conversation starting at position 0 starts
        for start, end in segments(row_positions, row_mask, query.shape[2]):
            shared = 0 if row_positions is None else int(row_positions[start])
            if shared == 0:
                root = start
                output[row, :, start:end] = F.scaled_dot_product_attention(
                    query[row : row + 1, :, start:end],
                    key[row : row + 1, :, start:end],
                    value[row : row + 1, :, start:end],
                    dropout_p=dropout,
                    is_causal=True,
                    scale=scaling,
                )[0]
                continue
            if root is None or root + shared > start:
                raise ValueError(f"a conversation starts at position {shared} with no system text before it")
            length = end - start
            # Every token sees the whole shared system text, then its own conversation up to itself.
            visible = torch.ones(length, shared + length, dtype=torch.bool, device=query.device)
            visible[:, shared:] = torch.ones(length, length, dtype=torch.bool, device=query.device).tril()
            context = [slice(root, root + shared), slice(start, end)]
            output[row, :, start:end] = F.scaled_dot_product_attention(
                query[row : row + 1, :, start:end],
                torch.cat([key[row : row + 1, :, part] for part in context], dim=2),
                torch.cat([value[row : row + 1, :, part] for part in context], dim=2),
                attn_mask=visible,
                dropout_p=dropout,
                scale=scaling,
            )[0]
    return output.transpose(1, 2).contiguous(), None


def use_packed_attention(model) -> None:
    """Make `model` (a transformers model, or a peft model around one) attend one conversation at a time."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    AttentionInterface.register(NAME, packed_attention)
    # A 2-D padding mask at most (None without padding), as for flash attention, which also works per sequence.
    AttentionMaskInterface.register(NAME, flash_attention_mask)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.config._attn_implementation = NAME
