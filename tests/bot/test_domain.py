"""The domain pack loader and the bundled demo pack: what the pack promises, and clear errors.

Broken packs are copies of the demo pack in tmp_path with one thing spoiled.
"""

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from bot.domain import DomainPack, DomainPackError, default_pack_path, load_pack

ORDER_NUMBER = re.compile(r"LL-\d+", re.IGNORECASE)
NUMBER = re.compile(r"\d+(?:\.\d+)?")


@pytest.fixture(scope="module")
def demo() -> DomainPack:
    return load_pack(default_pack_path())


@pytest.fixture
def pack_dir(tmp_path: Path) -> Path:
    """A private copy of the demo pack that a test may spoil."""
    return Path(shutil.copytree(default_pack_path(), tmp_path / "pack"))


def edit_yaml(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def append_line(path: Path, line: str) -> int:
    """Append one line to a JSONL file and return its line number."""
    count = len(path.read_text(encoding="utf-8").splitlines())
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
    return count + 1


def conversation(*roles: str, id: str = "broken-1") -> str:
    messages = [{"role": role, "content": f"turn {index}"} for index, role in enumerate(roles)]
    return json.dumps({"id": id, "intent": "greeting", "messages": messages})


# --- The demo pack keeps its promises ---------------------------------------------------------


def test_demo_pack_describes_a_company(demo: DomainPack) -> None:
    assert demo.name == "demo_shop"
    assert demo.company_name in demo.system_prompt
    assert "example.com" in demo.company_profile
    assert len(demo.system_prompt.split()) <= 120
    for text in (demo.greeting, demo.handoff_message, demo.unavailable_message, demo.rephrase_message):
        assert len(text.split()) >= 8
    assert demo.path == default_pack_path()


def test_demo_policies_cover_the_usual_questions(demo: DomainPack) -> None:
    required = {"shipping", "returns", "refunds", "warranty", "payments", "accounts"}
    required |= {"order_tracking", "cancellations", "privacy"}
    assert required <= {policy.id for policy in demo.policies}
    for policy in demo.policies:
        assert 60 <= len(policy.text.split()) <= 150, policy.id
    assert "30 days" in demo.policy("returns").text


def test_demo_intents_are_rich_enough_to_train_a_classifier(demo: DomainPack) -> None:
    assert len(demo.intents) >= 15
    for intent in demo.intents:
        assert len(intent.examples) >= 20, intent.name
        assert len({example.lower() for example in intent.examples}) == len(intent.examples), intent.name
    assert demo.intent("human_agent").handling == "handoff"
    assert demo.intent("out_of_scope").handling == "answer"
    assert demo.intent("out_of_scope").policies == []
    order_status = demo.intent("order_status")
    assert order_status.handling == "collect"
    assert order_status.required_slots == ["order_number"]
    assert order_status.ask


def test_lookups_of_unknown_names_fail_loudly(demo: DomainPack) -> None:
    with pytest.raises(KeyError, match="no policy 'loyalty'"):
        demo.policy("loyalty")
    with pytest.raises(KeyError, match="no intent 'order_pizza'"):
        demo.intent("order_pizza")


def test_demo_seed_conversations_are_valid_multi_turn_chats(demo: DomainPack) -> None:
    seeds = demo.seed_conversations()
    assert 300 <= len(seeds) <= 400
    assert {seed.intent for seed in seeds} == {intent.name for intent in demo.intents}
    multi_turn = [seed for seed in seeds if sum(m.role == "user" for m in seed.messages) >= 2]
    assert len(multi_turn) >= 0.75 * len(seeds)
    for seed in seeds:
        assert seed.messages[0].role == "user"
        assert seed.messages[-1].role == "assistant"
        assert all(m.role in ("user", "assistant") for m in seed.messages)
    assert len({seed.id for seed in seeds}) == len(seeds)


def test_seed_replies_state_only_numbers_the_pack_states(demo: DomainPack) -> None:
    # A tiny model copies facts from its training chats; a number the policies lack is an invention.
    source = " ".join([demo.company_profile, demo.handoff_message, *(policy.text for policy in demo.policies)])
    known = set(NUMBER.findall(ORDER_NUMBER.sub("", source)))
    for seed in demo.seed_conversations():
        for message in seed.messages:
            if message.role == "assistant":
                stated = set(NUMBER.findall(ORDER_NUMBER.sub("", message.content)))
                assert stated <= known, f"{seed.id}: {message.content}"


def test_collect_conversations_ask_for_the_order_number_first(demo: DomainPack) -> None:
    collect = {intent.name for intent in demo.intents if intent.handling == "collect"}
    for seed in demo.seed_conversations():
        if seed.intent not in collect:
            continue
        if not ORDER_NUMBER.search(seed.messages[0].content):
            question = seed.messages[1].content.lower()
            assert "order" in question and "number" in question and "?" in question, seed.id


def test_demo_checks_are_grounded_in_the_pack(demo: DomainPack) -> None:
    assert 10 <= len(demo.checks) <= 15
    pack_text = " ".join([demo.system_prompt, demo.handoff_message, *(policy.text for policy in demo.policies)]).lower()
    for check in demo.checks:
        if check.expect_any:
            assert any(s.lower() in pack_text for s in check.expect_any), check.id


def test_seed_file_matches_its_generator() -> None:
    script = default_pack_path() / "build_seed.py"
    spec = importlib.util.spec_from_file_location("build_seed", script)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in module.build())
    actual = (default_pack_path() / "seed_conversations.jsonl").read_text(encoding="utf-8")
    assert actual == expected, "seed_conversations.jsonl was edited by hand or build_seed.py changed"


# --- Broken packs are refused with a message that says where ----------------------------------


def test_unknown_policy_reference_is_named(pack_dir: Path) -> None:
    edit_yaml(pack_dir / "intents.yaml", lambda intents: intents[2]["policies"].append("loyalty_points"))
    with pytest.raises(DomainPackError, match=r"intents\.yaml:\d+: intent 'order_status' .*'loyalty_points'"):
        load_pack(pack_dir)


def test_bad_jsonl_line_is_named(pack_dir: Path) -> None:
    line = append_line(pack_dir / "seed_conversations.jsonl", '{"id": "seed-9999", "messages": [')
    with pytest.raises(DomainPackError, match=rf"seed_conversations\.jsonl:{line}: invalid JSON"):
        load_pack(pack_dir)


def test_conversation_that_does_not_alternate_is_refused(pack_dir: Path) -> None:
    line = append_line(pack_dir / "seed_conversations.jsonl", conversation("user", "user", "assistant"))
    with pytest.raises(DomainPackError, match=rf"jsonl:{line}: .*messages\[1\] is 'user'.*alternate"):
        load_pack(pack_dir)


def test_conversation_must_end_with_the_assistant(pack_dir: Path) -> None:
    line = append_line(pack_dir / "seed_conversations.jsonl", conversation("user", "assistant", "user"))
    with pytest.raises(DomainPackError, match=rf"jsonl:{line}: .*last message must be an assistant reply"):
        load_pack(pack_dir)


def test_system_messages_are_refused_in_seeds(pack_dir: Path) -> None:
    line = append_line(pack_dir / "seed_conversations.jsonl", conversation("system", "user", "assistant"))
    with pytest.raises(DomainPackError, match=rf"jsonl:{line}: messages\.0\.role"):
        load_pack(pack_dir)


def test_seeds_are_read_when_asked_not_at_load(pack_dir: Path) -> None:
    pack = load_pack(pack_dir)
    before = len(pack.seed_conversations())
    append_line(pack_dir / "seed_conversations.jsonl", conversation("user", "assistant", id="late-1"))
    assert len(pack.seed_conversations()) == before + 1
    append_line(pack_dir / "seed_conversations.jsonl", "not json")
    with pytest.raises(DomainPackError, match="invalid JSON"):
        pack.seed_conversations()


def test_collect_intent_without_a_question_is_refused(pack_dir: Path) -> None:
    edit_yaml(pack_dir / "intents.yaml", lambda intents: intents[3].pop("ask"))
    with pytest.raises(DomainPackError, match=r"intents\.yaml:\d+: entry 4 \(name 'cancel_order'\).*ask"):
        load_pack(pack_dir)


def test_empty_help_article_is_named(pack_dir: Path) -> None:
    (pack_dir / "help" / "returns.md").write_text("# Returns\n\n", encoding="utf-8")
    with pytest.raises(DomainPackError, match=r"help/returns\.md: has no text"):
        load_pack(pack_dir)


def test_help_articles_are_the_policies_the_prompt_sees(pack_dir: Path) -> None:
    (pack_dir / "help" / "gift_wrap.md").write_text(
        "# Gift wrapping\n\nWe gift-wrap any order for **$4.50**.\n\n- Add it at checkout\n", encoding="utf-8"
    )
    pack = load_pack(pack_dir)
    assert pack.policy("gift_wrap").title == "Gift wrapping"
    assert pack.policy("gift_wrap").text == "We gift-wrap any order for $4.50. Add it at checkout."
    assert [article.slug for article in pack.articles] == [policy.id for policy in pack.policies]


def test_example_shared_by_two_intents_is_refused(pack_dir: Path) -> None:
    edit_yaml(pack_dir / "intents.yaml", lambda intents: intents[1]["examples"].append("HI"))
    with pytest.raises(DomainPackError, match="'goodbye' is also an example of intent 'greeting'"):
        load_pack(pack_dir)


def test_missing_pack_setting_names_the_field(pack_dir: Path) -> None:
    edit_yaml(pack_dir / "pack.yaml", lambda pack: pack.pop("handoff_message"))
    with pytest.raises(DomainPackError, match=r"pack\.yaml: handoff_message: Field required"):
        load_pack(pack_dir)


def test_misspelled_key_is_refused_not_ignored(pack_dir: Path) -> None:
    edit_yaml(pack_dir / "pack.yaml", lambda pack: pack.update(greting="Hello!"))
    with pytest.raises(DomainPackError, match=r"pack\.yaml:\d+: greting: Extra inputs are not permitted"):
        load_pack(pack_dir)


def test_invalid_yaml_is_reported_with_the_file(pack_dir: Path) -> None:
    (pack_dir / "checks.yaml").write_text("- id: x\n  prompt: [unclosed\n", encoding="utf-8")
    with pytest.raises(DomainPackError, match=r"checks\.yaml: invalid YAML"):
        load_pack(pack_dir)


def test_missing_folder_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DomainPackError, match="domain pack folder not found"):
        load_pack(tmp_path / "nowhere")
