"""The intent classifier's network: a sentence encoder with a linear head, and its fast CPU inference path."""

import logging
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

# Encoder scores decide branches (which passage and sentence answer, whether the help content covers a question,
# whether an intent is confident enough), so the encoder runs in float32 and its scores are rounded to this many
# decimals before anything compares them. int8 products differ between CPUs' kernels (AMX, AVX-512 VNNI, AVX2) by
# up to 0.04 in a cosine, float32 ones in the last bits (about 1e-6); rounded, the same question gets the same
# decision on every CPU, and equal scores are ordered by a stable rule (article order, sentence order).
# tests/bench/bench_kernel_sets.py compares the replies under several kernel sets on one machine.
SCORE_DECIMALS = 4


def settled(score: float) -> float:
    """`score` as comparisons see it: rounded to SCORE_DECIMALS."""
    return round(float(score), SCORE_DECIMALS)


class ClassifierError(Exception):
    """A classifier folder is missing, incomplete, or of a format this code cannot read."""


def _attention_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    # Boolean key mask for scaled_dot_product_attention; None (no padding) takes its fastest kernel.
    if attention_mask is None:
        return None
    return attention_mask[:, None, None, :].to(torch.bool)


def _mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    if attention_mask is None:
        return hidden.mean(1)
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class IntentNet(nn.Module):
    """A BERT-style sentence encoder, mean-pooled, followed by a cosine-similarity head.

    Cosine logits (a learned scale times the cosine between the message and each intent's vector) stay
    bounded, so an unfamiliar message cannot reach an extreme confidence through a long vector, and
    the head can start from each intent's mean example embedding.

    The encoder is a transformers BertModel used as a container of weights: the forward below states
    BERT's maths directly (dropout included), which lets training run the layers in two parts, the
    frozen lower layers once and the trained upper layers every step, and skips transformers' Python
    overhead, which outweighs the arithmetic for a 15-token message.
    """

    def __init__(self, encoder: PreTrainedModel, num_labels: int, scale: float = 20.0) -> None:
        super().__init__()
        config = encoder.config
        if config.model_type != "bert" or config.hidden_act != "gelu" or config.position_embedding_type != "absolute":
            raise ClassifierError(
                f"only BERT encoders with gelu and absolute positions are supported, not {config.model_type}"
            )
        # transformers' BertModel; typed Any because its submodules are reached by name.
        self.encoder: Any = encoder
        self.heads = int(config.num_attention_heads)
        self.hidden_dropout = float(config.hidden_dropout_prob)
        self.attention_dropout = float(config.attention_probs_dropout_prob)
        self.weight = nn.Parameter(torch.randn(num_labels, int(config.hidden_size)) * 0.02)
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    @property
    def num_layers(self) -> int:
        return len(self.encoder.encoder.layer)

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        embeddings = self.encoder.embeddings
        length = input_ids.shape[1]
        x = embeddings.word_embeddings(input_ids) + embeddings.position_embeddings.weight[:length]
        x = embeddings.LayerNorm(x + embeddings.token_type_embeddings.weight[0])
        return F.dropout(x, self.hidden_dropout, self.training)

    def run_layers(
        self, x: torch.Tensor, attention_mask: torch.Tensor | None, start: int = 0, stop: int | None = None
    ) -> torch.Tensor:
        mask = _attention_mask(attention_mask)
        for layer in self.encoder.encoder.layer[start:stop]:
            x = self._layer(layer, x, mask)
        return x

    def _layer(self, layer: Any, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        batch, length, hidden = x.shape
        attention = layer.attention.self

        def split(projection: nn.Module) -> torch.Tensor:
            return projection(x).view(batch, length, self.heads, hidden // self.heads).transpose(1, 2)

        attended = F.scaled_dot_product_attention(
            split(attention.query),
            split(attention.key),
            split(attention.value),
            attn_mask=mask,
            dropout_p=self.attention_dropout if self.training else 0.0,
        ).transpose(1, 2)
        output = layer.attention.output
        projected = F.dropout(output.dense(attended.reshape(batch, length, hidden)), self.hidden_dropout, self.training)
        x = output.LayerNorm(x + projected)
        feed_forward = layer.output.dense(F.gelu(layer.intermediate.dense(x)))
        return layer.output.LayerNorm(x + F.dropout(feed_forward, self.hidden_dropout, self.training))

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean-pooled sentence embeddings, as sentence-transformers computes them for this model."""
        return _mean_pool(self.run_layers(self.embed_tokens(input_ids), attention_mask), attention_mask)

    def head(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(embeddings, dim=-1) @ F.normalize(self.weight, dim=-1).T

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.embed(input_ids, attention_mask))

    def head_state(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight.detach().contiguous(), "scale": self.scale.detach().reshape(1).contiguous()}

    def load_head_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.weight.copy_(state["weight"])
            self.scale.copy_(state["scale"].reshape(()))


# --- The fast inference path --------------------------------------------------------------------
# The same maths as IntentNet in eval mode, with Q, K and V fused into one matrix product and the
# head folded into one matrix, so that int8 dynamic quantisation and TorchScript have as few
# operations as possible to run; tests/bot/test_intents.py checks it against transformers' BertModel.
#
# int8 activations are quantised per tensor, and BERT's LayerNorm outputs have a few channels far
# larger than the rest, which then take most of the 256 levels. As in SmoothQuant (Xiao et al., 2023),
# those channels are divided down before the matrix product and the weights multiplied up to match:
# exact in float, and it recovered most of what int8 cost (BANKING77 validation: 93.6% in float32,
# 92.9% in int8, 93.5% smoothed). The channel ranges are estimated from the LayerNorm's own scale and
# shift, so no calibration data needs to be kept.


def _smoothed(linear: nn.Linear, norm: nn.LayerNorm) -> tuple[nn.Linear, torch.Tensor]:
    """A copy of `linear` with input channel j scaled up by s_j, and 1/s (to apply to its input)."""
    activation = 4 * norm.weight.detach().abs() + norm.bias.detach().abs()
    weight = linear.weight.detach().abs().amax(0)
    scale = (activation.clamp(min=1e-5) / weight.clamp(min=1e-5)).sqrt()
    smoothed = nn.Linear(linear.in_features, linear.out_features)
    with torch.no_grad():
        smoothed.weight.copy_(linear.weight * scale)
        smoothed.bias.copy_(linear.bias)
    return smoothed, 1 / scale


class _FastLayer(nn.Module):
    qkv_input: torch.Tensor
    up_input: torch.Tensor

    def __init__(self, layer: Any, heads: int, input_norm: nn.LayerNorm) -> None:
        super().__init__()
        attention = layer.attention.self
        hidden = attention.query.weight.shape[0]
        qkv = nn.Linear(hidden, 3 * hidden)
        with torch.no_grad():
            qkv.weight.copy_(torch.cat([attention.query.weight, attention.key.weight, attention.value.weight]))
            qkv.bias.copy_(torch.cat([attention.query.bias, attention.key.bias, attention.value.bias]))
        self.qkv, qkv_input = _smoothed(qkv, input_norm)
        self.register_buffer("qkv_input", qkv_input)
        self.out = layer.attention.output.dense
        self.norm1 = layer.attention.output.LayerNorm
        self.up, up_input = _smoothed(layer.intermediate.dense, self.norm1)
        self.register_buffer("up_input", up_input)
        self.down = layer.output.dense
        self.norm2 = layer.output.LayerNorm
        self.heads = heads
        self.hidden = hidden

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        batch, length, _ = x.shape
        qkv = self.qkv(x * self.qkv_input)
        qkv = qkv.view(batch, length, 3, self.heads, self.hidden // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask)
        x = self.norm1(x + self.out(attended.transpose(1, 2).reshape(batch, length, self.hidden)))
        return self.norm2(x + self.down(F.gelu(self.up(x * self.up_input))))


class _FastIntentNet(nn.Module):
    """IntentNet's normalised sentence embeddings for inference only; shares the (unquantised)
    embedding tables with it."""

    positions: torch.Tensor
    token_type: torch.Tensor

    def __init__(self, net: IntentNet) -> None:
        super().__init__()
        embeddings = net.encoder.embeddings
        self.words = embeddings.word_embeddings
        self.register_buffer("positions", embeddings.position_embeddings.weight.detach())
        self.register_buffer("token_type", embeddings.token_type_embeddings.weight.detach()[0])
        self.norm = embeddings.LayerNorm
        layers, norm = [], embeddings.LayerNorm
        for layer in net.encoder.encoder.layer:
            layers.append(_FastLayer(layer, net.heads, norm))
            norm = layer.output.LayerNorm
        self.layers = nn.ModuleList(layers)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        length = input_ids.shape[1]
        x = self.norm(self.words(input_ids) + self.positions[:length] + self.token_type)
        mask = _attention_mask(attention_mask)
        for layer in self.layers:
            x = layer(x, mask)
        return F.normalize(_mean_pool(x, attention_mask), dim=-1)


def compile_for_inference(net: IntentNet, quantize: bool = False) -> nn.Module:
    """The fastest module that computes `net`'s normalised sentence embeddings here: fused, scripted, and int8
    where asked and supported (benchmarks only: int8 results depend on the CPU, see SCORE_DECIMALS).

    Falls back step by step (float weights, then plain eager mode) where this torch build lacks a
    piece, so a newer torch without the deprecated quantisation or TorchScript APIs still works.
    """
    module: nn.Module = _FastIntentNet(net).eval()
    with warnings.catch_warnings():
        # Both APIs are deprecated in favour of torchao / torch.export, which need more set-up than a
        # 22M-parameter encoder is worth; they are still the fastest route on CPU in this torch.
        warnings.simplefilter("ignore")
        if quantize:
            try:
                # Weights quantised per output channel: on 10-shot BANKING77 validation that kept
                # 0.8 points of accuracy that one scale per matrix lost, at the same speed.
                per_channel = torch.ao.quantization.per_channel_dynamic_qconfig
                module = torch.ao.quantization.quantize_dynamic(module, {nn.Linear: per_channel}, dtype=torch.qint8)
            except (AttributeError, RuntimeError) as err:
                logger.warning("int8 quantisation unavailable (%s); classifying in float32", err)
        try:
            # Scripted, not frozen: freezing bought no speed here (p50 2.1 vs 2.0 ms a query) and every frozen
            # module kept about 60 MB alive for good, so each classifier promotion leaked that much.
            module = torch.jit.script(module.eval())
        except Exception as err:  # TorchScript failures have no common type; eager mode is correct too.
            logger.warning("TorchScript unavailable (%s); classifying in eager mode", err)
    return module
