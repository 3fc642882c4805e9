"""The prompt always fits the token budget, keeps whole turns, and keeps the newest ones."""

from collections.abc import Sequence

import pytest

from bot.context import (
    ChatTemplateCounter,
    TokenCounter,
    Turn,
    WindowTooSmall,
    fit_recent_turns,
    relevant_policies,
    retrieval_query,
)
from bot.domain import default_pack_path, load_pack


class WordCounter(TokenCounter):
    """One token per word plus four per message: easy to reason about in assertions."""

    def count(self, messages: Sequence[dict[str, str]]) -> int:
        return sum(len(message["content"].split()) + 4 for message in messages)


def conversation(turns: int) -> list[Turn]:
    return [Turn(role="customer" if i % 2 == 0 else "bot", text=f"turn {i} " + "word " * 10) for i in range(turns)]


def test_short_conversation_is_kept_whole() -> None:
    prompt = fit_recent_turns(system="be nice", turns=conversation(3), budget=1000, counter=WordCounter())
    assert prompt.dropped_turns == 0
    assert [m["role"] for m in prompt.messages] == ["system", "user", "assistant", "user"]


def test_long_conversation_keeps_the_newest_whole_turns_within_budget() -> None:
    turns = conversation(41)
    prompt = fit_recent_turns(system="be nice", turns=turns, budget=100, counter=WordCounter())
    assert prompt.tokens <= 100
    assert prompt.messages[-1]["content"] == turns[-1].text
    kept = prompt.messages[1:]
    # Whole turns only, and the kept ones are exactly the newest ones.
    assert [m["content"] for m in kept] == [t.text for t in turns[prompt.dropped_turns :]]
    assert kept[0]["role"] == "user"


def test_a_message_that_cannot_fit_is_reported() -> None:
    with pytest.raises(WindowTooSmall):
        fit_recent_turns(system="be nice", turns=[Turn("customer", "word " * 500)], budget=50, counter=WordCounter())


def test_real_tokenizer_budget_holds(base_model_dir) -> None:
    counter = ChatTemplateCounter(base_model_dir)
    turns = conversation(200)
    prompt = fit_recent_turns(system="You help customers.", turns=turns, budget=512, counter=counter)
    assert 400 < prompt.tokens <= 512
    assert counter.count(prompt.messages) == prompt.tokens


def test_the_policy_that_matches_the_question_is_chosen() -> None:
    pack = load_pack(default_pack_path())
    assert relevant_policies(pack, "How do I return an item I bought?")[0].id == "returns"
    assert relevant_policies(pack, "What does shipping cost to Canada?")[0].id in {"shipping", "international_shipping"}
    assert relevant_policies(pack, "zzz qqq") == []


def test_a_follow_up_is_searched_with_the_messages_before_it_and_a_new_question_alone() -> None:
    def query(*messages: str) -> str:
        turns = [Turn("customer" if i % 2 == 0 else "bot", text) for i, text in enumerate(messages)]
        return retrieval_query(turns)

    # Short, or pointing back ("it"): the two customer messages before it come along, oldest first.
    assert query("Do you ship to Canada?", "Yes.", "How long does it take?", "7 to 14 days.", "And the cost?") == (
        "Do you ship to Canada? How long does it take? And the cost?"
    )
    assert query("Tell me about express shipping", "...", "can it go to a P.O. box") == (
        "Tell me about express shipping can it go to a P.O. box"
    )
    # A message that stands alone is searched alone, and so is the first one.
    assert query("Do you ship to Canada?", "Yes.", "How long do refunds take to reach my bank?") == (
        "How long do refunds take to reach my bank?"
    )
    assert query("how much?") == "how much?"
    assert query() == ""
