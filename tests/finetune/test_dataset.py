"""Dataset building: corrections win, bad replies are dropped, duplicates go, splits never move."""

import json

import pytest
from sqlmodel import Session

from finetune.dataset import Dataset, DatasetRecipe, SourceConversation, SourceTurn, build_dataset, split_of


def conversation(cid: str, *turns: SourceTurn, source: str = "store") -> SourceConversation:
    return SourceConversation(id=cid, source=source, turns=list(turns), intent="return_item")


def user(text: str) -> SourceTurn:
    return SourceTurn("user", text)


def bot(text: str, rating: str | None = None, correction: str | None = None) -> SourceTurn:
    return SourceTurn("assistant", text, rating=rating, correction=correction)


def test_corrections_replace_replies_and_bad_replies_end_the_conversation() -> None:
    corrected = conversation(
        "c1", user("How long for returns?"), bot("90 days!", rating="bad", correction="You have 30 days."),
        user("Thanks"), bot("You're welcome."),
    )  # fmt: skip
    bad = conversation("c2", user("Hi"), bot("Hello!"), user("Refund time?"), bot("Never.", rating="bad"), user("ok"))
    dataset = build_dataset([corrected, bad], DatasetRecipe(evaluation_percent=0, validation_percent=0))
    by_id = {record.id: record for record in dataset.records}
    assert [m["content"] for m in by_id["c1"].messages] == [
        "How long for returns?", "You have 30 days.", "Thanks", "You're welcome.",
    ]  # fmt: skip
    assert by_id["c1"].corrected_turns == 1
    assert [m["content"] for m in by_id["c2"].messages] == ["Hi", "Hello!"]
    assert dataset.card["corrected_turns"] == 1


def test_personal_data_is_masked_and_near_duplicates_removed() -> None:
    first = conversation("a", user("Mail me at jo@example.com about order 1"), bot("Done."))
    twin = conversation("b", user("mail me at jo@example.com about order 2!"), bot("Done"))
    dataset = build_dataset([first, twin], DatasetRecipe(), mask=lambda text: text.replace("jo@example.com", "[EMAIL]"))
    assert len(dataset.records) == 1 and dataset.card["dropped"] == {"duplicate": 1}
    assert "[EMAIL]" in dataset.records[0].messages[0]["content"]


def test_split_is_deterministic_by_conversation_and_held_out_set_exists() -> None:
    recipe = DatasetRecipe(validation_percent=10, evaluation_percent=10)
    conversations = [
        conversation(f"conv-{i}", user(f"question {i} " + "x" * i), bot(f"answer {i}")) for i in range(400)
    ]
    dataset = build_dataset(conversations, recipe)
    splits = {record.id: record.split for record in dataset.records}
    assert set(splits.values()) == {"train", "validation", "evaluation"}
    assert 20 < sum(split == "evaluation" for split in splits.values()) < 70
    # Adding conversations never moves an existing one to another split.
    more = build_dataset([*conversations, conversation("new", user("new q"), bot("new a"))], recipe)
    assert all(splits[r.id] == r.split for r in more.records if r.id in splits)
    assert split_of("conv-7", recipe) == splits["conv-7"]
    assert dataset.content_hash != more.content_hash


def test_saved_dataset_loads_back(tmp_path) -> None:
    dataset = build_dataset([conversation("x", user("Hi"), bot("Hello"))], DatasetRecipe())
    loaded = Dataset.load(dataset.save(tmp_path / "ds-1"))
    assert loaded.records == dataset.records and loaded.content_hash == dataset.content_hash


@pytest.mark.parametrize("bad", [{"validation_percent": 60}, {"max_messages": 1}, {"max_message_chars": 5}])
def test_recipe_checks(bad: dict) -> None:
    with pytest.raises(ValueError):
        DatasetRecipe(**bad)


def test_the_dataset_a_run_trains_on_has_personal_data_masked(tmp_path) -> None:
    from bot.domain import load_pack
    from conversations import crud
    from conversations.db import init_db, make_engine
    from core.settings import demo_pack_path
    from finetune.worker import source_conversations, training_dataset
    from tests.utils.store import bot, customer, make_conversation

    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    init_db(engine)
    secrets = ["jane.doe@example.com", "415.555.0100", "de89 3704 0044 0532 0130 00", "4111.1111.1111.1111"]
    with Session(engine) as session:
        conversation, _ = make_conversation(
            session,
            customer(f"My email is {secrets[0]} and my phone {secrets[1]}. Where is my refund?"),
            bot("Which account should we send it to?"),
            customer(f"IBAN {secrets[2]}, or my card {secrets[3]}"),
            bot("Thank you, the refund is on its way."),
        )
        crud.mark_conversation(session=session, conversation_id=conversation.id, reviewed=True,
                               use_for_training=True, expected_version=0)  # fmt: skip
        conversation_id = conversation.id
        sources = source_conversations(session, load_pack(demo_pack_path()))
    dataset = training_dataset(sources, DatasetRecipe())
    [record] = [record for record in dataset.records if record.id == conversation_id]
    text = json.dumps([record.messages for record in dataset.records])
    assert not [secret for secret in secrets if secret in text]
    assert "[email]" in text and "[phone]" in text and "[iban]" in text and "[card]" in text
    assert "Where is my refund?" in json.dumps(record.messages)
