"""The one place text becomes words (bot/text.py): chat spellings read as the words they stand for."""

from bot.grounding import content_stems, is_negated
from bot.text import content_words, words


def test_chat_spellings_are_the_words_they_stand_for() -> None:
    assert words("can u tell me whats ur returns policy") == [
        "can", "you", "tell", "me", "what's", "your", "returns", "policy",
    ]  # fmt: skip
    # So they are stopwords like the written-out words, and "dont" denies like "don't".
    assert content_words("im wondering if u ship there") == content_words("I'm wondering if you ship there")
    assert is_negated("i dont have the receipt") and is_negated("i don't have the receipt")
    assert content_stems("thats my ur order") == content_stems("that's my your order") == ["order"]
    # Words that only look like one stay as they are.
    assert words("Uruguay, urgent, imports") == ["uruguay", "urgent", "imports"]
