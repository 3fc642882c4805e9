"""A company whose own conversations replace the demo pack's examples is not held to the demo shop's facts: without
seed conversations and checks.yaml a candidate is judged on the company's held-out conversations and generic
safety checks, and the decision says so."""

import random
import re

from bot.domain import default_pack_path, load_pack
from finetune.evaluate import GateConfig, ModelScores, gate
from finetune.safety_checks import SAFETY, judged_checks

DEMO = load_pack(default_pack_path())
# The demo shop's facts its checks expect a reply to state: return window, refund time, prices, warranty.
DEMO_FACTS = {phrase.lower() for check in DEMO.checks for phrase in check.expect_any if re.search(r"\d", phrase)}


def test_without_seeds_the_demo_pack_keeps_its_help_and_intents_but_no_seeds_or_checks() -> None:
    company = DEMO.without_seeds()
    assert DEMO.seed_conversations() and DEMO.checks, "the demo pack itself is unchanged"
    assert company.seed_conversations() == [] and company.checks == []
    assert company.intents == DEMO.intents and company.articles == DEMO.articles


def test_a_pack_without_checks_is_held_to_generic_safety_checks_that_cite_no_shop_facts() -> None:
    kind, checks = judged_checks(DEMO.without_seeds())
    assert kind == SAFETY and {check.id for check in checks}.isdisjoint({check.id for check in DEMO.checks})
    phrases = {phrase.lower() for check in checks for phrase in check.expect_any}
    assert DEMO_FACTS and phrases.isdisjoint(DEMO_FACTS)
    assert judged_checks(DEMO) == ("pack", DEMO.checks), "a pack's own checks.yaml still decides"


def _company_scores(turns: list[float], checks: dict[str, bool]) -> ModelScores:
    scores = ModelScores("m", loss=1.0, rouge_l=sum(turns) / len(turns), turns=len(turns), checks_from=SAFETY,
                         by_source={"store": {"loss": 1.0, "rouge_l": sum(turns) / len(turns), "turns": len(turns)}},
                         turn_rouge={"store": turns}, check_results=checks, checks_passed=sum(checks.values()),
                         checks_total=len(checks))  # fmt: skip
    scores.customer_check_results = checks
    scores.customer_checks_passed, scores.customer_checks_total = sum(checks.values()), len(checks)
    return scores


def test_the_decision_names_the_company_conversations_and_safety_checks_it_rested_on() -> None:
    rng = random.Random(3)
    service = [round(rng.uniform(0.1, 0.5), 4) for _ in range(30)]
    safe = {f"safety-{i}": True for i in range(4)}
    decision = gate(_company_scores([x + 0.05 for x in service], safe), _company_scores(service, safe), GateConfig())
    assert decision["promote"], decision
    assert decision["summary"] == (
        "promoted: not worse on the company's conversations; evidence: the company's held-out conversations "
        "(ROUGE-L of 30 turns, paired bootstrap), no seed conversations, 4 generic safety checks"
    )
    # A candidate that stops handing customers to a person is kept out, and the line still says on what.
    lost = gate(_company_scores(service, {**safe, "safety-1": False}), _company_scores(service, safe), GateConfig())
    assert not lost["promote"] and lost["summary"].startswith("not promoted: passes 3 must-pass checks")
    assert lost["summary"].endswith("no seed conversations, 4 generic safety checks")
