"""The real sentence encoder, counting what it embeds: shows which texts an index or the stored embeddings spared."""

from collections.abc import Sequence

import numpy as np

from bot.knowledge import SentenceEncoder


class CountingEncoder(SentenceEncoder):
    """The real encoder, counting the texts it embeds."""

    def __init__(self) -> None:
        super().__init__()
        self.embedded: list[str] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.embedded += texts
        return super().embed(texts)
