"""Preference pairs from staff corrections, and the preference section of a training recipe.

Training with them (DPO through TRL, loaded into vLLM afterwards) runs in tests/finetune/test_learning_loop.py.
"""

import pytest

from finetune.dataset import DatasetRecipe, SourceConversation, SourceTurn, split_of
from finetune.preference import PreferenceRecipe, preference_pairs
from finetune.worker import load_preference_recipe, load_recipe

EVERYTHING_TRAINS = DatasetRecipe(evaluation_percent=0, validation_percent=0)


def conversation(cid: str, *turns: SourceTurn, source: str = "store") -> SourceConversation:
    return SourceConversation(id=cid, source=source, turns=list(turns), intent="return_item")


def user(text: str, intent: str | None = None) -> SourceTurn:
    return SourceTurn("user", text, intent=intent)


def bot(text: str, rating: str | None = None, correction: str | None = None) -> SourceTurn:
    return SourceTurn("assistant", text, rating=rating, correction=correction)


def test_each_corrected_reply_is_a_pair_with_earlier_corrections_in_its_prompt() -> None:
    chat = conversation(
        "c1",
        user("How long for returns?", intent="return_item"),
        bot("90 days!", rating="bad", correction="You have 30 days from delivery."),
        user("And the refund?", intent="refund_status"),
        bot("Instantly.", correction="Refunds are issued within 2 business days."),
        user("Thanks"),
        bot("You're welcome."),
    )
    pairs = preference_pairs([chat], EVERYTHING_TRAINS)
    assert [(p.rejected, p.chosen) for p in pairs] == [
        ("90 days!", "You have 30 days from delivery."),
        ("Instantly.", "Refunds are issued within 2 business days."),
    ]
    assert pairs[0].prompt == [{"role": "user", "content": "How long for returns?"}]
    assert [m["content"] for m in pairs[1].prompt] == [
        "How long for returns?", "You have 30 days from delivery.", "And the refund?",
    ]  # fmt: skip
    assert pairs[1].intent == "refund_status" and pairs[1].conversation_id == "c1"


def test_pairs_skip_seeds_held_out_conversations_duplicates_and_what_follows_an_uncorrected_bad_reply() -> None:
    recipe = DatasetRecipe(evaluation_percent=20, validation_percent=20)
    ids = [f"conv-{index}" for index in range(60)]
    train_id = next(cid for cid in ids if split_of(cid, recipe) == "train")
    held_out_id = next(cid for cid in ids if split_of(cid, recipe) == "evaluation")

    def corrected(cid: str, source: str = "store", question: str = "Return window?") -> SourceConversation:
        return conversation(cid, user(question), bot("90 days", correction="30 days."), source=source)

    broken = conversation(
        train_id + "-b" if split_of(train_id + "-b", recipe) == "train" else train_id,
        user("Hi"), bot("Nope.", rating="bad"), user("Refund?"), bot("Never", correction="Within 2 business days."),
    )  # fmt: skip
    pairs = preference_pairs(
        [
            corrected(train_id),
            corrected(held_out_id, question="Other question?"),
            corrected("seed-1", source="seed", question="A seed question?"),
            corrected(
                train_id + "-twin" if split_of(train_id + "-twin", recipe) == "train" else train_id,
                question="RETURN window!!",
            ),  # fmt: skip
            broken,
        ],
        recipe,
    )
    assert [(p.conversation_id, p.prompt[-1]["content"]) for p in pairs] == [(train_id, "Return window?")]


def test_pairs_are_masked_and_a_correction_equal_to_the_reply_is_no_pair() -> None:
    chat = conversation(
        "c1",
        user("I'm jo@example.com, where is my refund?"),
        bot("Write to jo@example.com", correction="Refunds take 2 business days, jo@example.com."),
        user("ok"),
        bot("Same text.", correction="Same text."),
    )
    pairs = preference_pairs([chat], EVERYTHING_TRAINS, mask=lambda text: text.replace("jo@example.com", "[email]"))
    assert len(pairs) == 1
    assert pairs[0].prompt[0]["content"] == "I'm [email], where is my refund?"
    assert (pairs[0].rejected, pairs[0].chosen) == ("Write to [email]", "Refunds take 2 business days, [email].")


def test_recipes_carry_a_preference_section(base_model_dir) -> None:
    preference = load_preference_recipe(base_model_dir)
    assert preference.method == "dpo" and preference.min_pairs >= 1 and preference.max_minutes <= 5
    assert load_recipe(base_model_dir).max_steps >= 1, "the SFT fields still load beside the section"
    assert load_preference_recipe(base_model_dir, {"method": "off"}).method == "off"


@pytest.mark.parametrize("bad", [{"method": "ppo"}, {"beta": 0}, {"min_pairs": 0}, {"max_length": 10}])
def test_preference_recipe_refuses_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError):
        PreferenceRecipe(**bad)
