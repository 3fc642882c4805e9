"""What the model sees on each turn: the system text and the most recent whole turns that fit.

Budgets are counted in real tokens with the served model's own tokenizer and chat template.
"""

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.domain import DomainPack, Policy

_WORD = re.compile(r"[a-z]{3,}")
_STOPWORDS = frozenset(
    [
        "the",
        "and",
        "for",
        "you",
        "your",
        "are",
        "can",
        "with",
        "this",
        "that",
        "have",
        "has",
        "was",
        "not",
        "but",
        "how",
        "what",
        "when",
        "where",
        "why",
        "who",
        "will",
        "would",
        "could",
        "should",
        "please",
        "thanks",
        "thank",
        "hello",
        "there",
        "them",
        "they",
        "our",
        "out",
        "get",
        "got",
        "its",
        "about",
    ]
)


@dataclass(frozen=True)
class Turn:
    """One message of the conversation as the dialogue manager sees it."""

    role: str  # "customer", "bot" or "staff"
    text: str
    id: int | None = None


class TokenCounter(ABC):
    """Counts the tokens a chat prompt costs the served model."""

    @abstractmethod
    def count(self, messages: Sequence[dict[str, str]]) -> int: ...


class ChatTemplateCounter(TokenCounter):
    """Exact count: the model's tokenizer applied to its chat template, generation prompt included."""

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def count(self, messages: Sequence[dict[str, str]]) -> int:
        ids = self.tokenizer.apply_chat_template(list(messages), tokenize=True, add_generation_prompt=True)
        # transformers 5 returns a BatchEncoding here, 4.x a plain list.
        return len(ids["input_ids"] if hasattr(ids, "keys") else ids)


def relevant_policies(pack: DomainPack, text: str, limit: int = 1) -> list[Policy]:
    """Policies sharing the most content words with the customer's message."""
    words = set(_WORD.findall(text.lower())) - _STOPWORDS
    scored = []
    for policy in pack.policies:
        policy_words = set(_WORD.findall(f"{policy.id} {policy.title} {policy.text}".lower()))
        title_words = set(_WORD.findall(f"{policy.id} {policy.title}".lower()))
        score = len(words & policy_words) + 2 * len(words & title_words)
        if score:
            scored.append((score, policy.id, policy))
    scored.sort(key=lambda item: (-item[0], item[1]))
    return [policy for _, _, policy in scored[:limit]]


def system_text(
    pack: DomainPack, policies: Sequence[Policy], *, details: str = "", summary: str = ""
) -> str:
    """The system message: instructions, company, the policies in play, known details, earlier summary."""
    parts = [pack.system_prompt.strip(), f"About {pack.company_name}: {pack.company_profile.strip()}"]
    parts += [f"{policy.title}: {policy.text.strip()}" for policy in policies]
    if details:
        parts.append(f"Details the customer gave: {details}.")
    if summary:
        parts.append(f"Summary of the earlier conversation: {summary.strip()}")
    return "\n\n".join(parts)


def chat_role(turn: Turn) -> str:
    # Staff replies speak for the company, so the model sees them as assistant turns.
    return "user" if turn.role == "customer" else "assistant"


@dataclass(frozen=True)
class Prompt:
    """The messages sent to the model and what building them cost."""

    messages: list[dict[str, str]]
    tokens: int
    dropped_turns: int


class WindowTooSmall(Exception):
    """Even the system text and the newest customer message do not fit the budget."""


def fit_recent_turns(*, system: str, turns: Sequence[Turn], budget: int, counter: TokenCounter) -> Prompt:
    """Keep the system text and as many of the newest whole turns as fit in `budget` tokens."""
    header = [{"role": "system", "content": system}]
    rendered = [{"role": chat_role(turn), "content": turn.text} for turn in turns]
    # Search for the smallest start index that fits; cost grows as the start moves back.
    low, high = 0, len(rendered)
    while low < high:
        middle = (low + high) // 2
        if counter.count(header + rendered[middle:]) <= budget:
            high = middle
        else:
            low = middle + 1
    start = low
    # A prompt that opens on an assistant turn confuses small models; start on a customer turn.
    while start < len(rendered) and rendered[start]["role"] != "user":
        start += 1
    if start >= len(rendered):
        raise WindowTooSmall(f"the newest message does not fit in {budget} tokens")
    messages = header + rendered[start:]
    return Prompt(messages=messages, tokens=counter.count(messages), dropped_turns=start)
