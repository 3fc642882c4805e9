"""Intent classification interface: a prediction with calibrated confidences for the top intents.

(Placeholder interface; the trained MiniLM-based classifier replaces load_classifier's body.)
"""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class IntentScore:
    """One intent and its calibrated probability."""

    intent: str
    confidence: float


@dataclass(frozen=True)
class Prediction:
    """The most likely intent with its confidence, and the top intents in order."""

    intent: str
    confidence: float
    top: tuple[IntentScore, ...]

    @property
    def margin(self) -> float:
        return self.top[0].confidence - self.top[1].confidence if len(self.top) > 1 else self.confidence


class IntentClassifier(ABC):
    """Maps a customer message to the domain pack's intents."""

    @property
    @abstractmethod
    def labels(self) -> list[str]: ...

    @abstractmethod
    def predict(self, text: str) -> Prediction: ...

    def predict_many(self, texts: Sequence[str]) -> list[Prediction]:
        return [self.predict(text) for text in texts]

    @property
    def recommended(self) -> dict[str, float]:
        """Routing thresholds chosen when the classifier was calibrated (threshold, margin)."""
        return {}


def load_classifier(path: Path) -> IntentClassifier:
    raise NotImplementedError(f"no classifier implementation to load {path}")
