"""The promotion gate and ROUGE-L, the score it reads: a worse candidate is kept out, one within the tolerances
goes in, and each refusal names the metric that failed."""

import pytest

from finetune.evaluate import GateConfig, ModelScores, gate, rouge_l


def test_rouge_l_is_the_f1_of_the_longest_common_subsequence() -> None:
    assert rouge_l("You can return it within 30 days", "you can return it within 30 days") == 1.0
    # LCS "return within days" = 3 of 4 candidate words and 3 of 6 reference words: F1 = 2 * .75 * .5 / 1.25.
    assert rouge_l("return within ten days", "you may return it within days") == pytest.approx(0.6)
    assert rouge_l("days within return", "return within days") == pytest.approx(1 / 3)  # order matters
    assert rouge_l("nothing alike", "completely different") == 0.0
    assert rouge_l("", "anything") == 0.0 and rouge_l("...", "anything") == 0.0


IN_SERVICE = ModelScores(model="domain-v1", loss=1.00, rouge_l=0.40, checks_passed=14, checks_total=15)
CONFIG = GateConfig(loss_tolerance=0.02, rouge_tolerance=0.01, checks_tolerance=0)


@pytest.mark.parametrize(
    ("candidate", "promote", "failing"),
    [
        (ModelScores("c", loss=0.90, rouge_l=0.45, checks_passed=15), True, None),
        (ModelScores("c", loss=1.019, rouge_l=0.391, checks_passed=14), True, None),  # within every tolerance
        (ModelScores("c", loss=1.03, rouge_l=0.45, checks_passed=15), False, "held-out loss"),
        (ModelScores("c", loss=0.90, rouge_l=0.38, checks_passed=15), False, "ROUGE-L"),
        (ModelScores("c", loss=0.90, rouge_l=0.45, checks_passed=13), False, "must-pass checks"),
        (ModelScores("c", loss=None, rouge_l=None, checks_passed=14), True, None),  # unmeasured: checks decide
    ],
    ids=["better", "within-tolerance", "worse-loss", "worse-rouge", "fewer-checks", "only-checks"],
)
def test_the_gate_promotes_only_a_candidate_not_worse(candidate, promote: bool, failing: str | None) -> None:
    decision = gate(candidate, IN_SERVICE, CONFIG)
    assert decision["promote"] is promote
    if failing:
        assert len(decision["reasons"]) == 1 and failing in decision["reasons"][0]


def test_every_failing_metric_is_named_and_the_first_adapter_always_goes_in() -> None:
    worst = ModelScores("c", loss=2.0, rouge_l=0.1, checks_passed=0)
    assert len(gate(worst, IN_SERVICE, CONFIG)["reasons"]) == 3
    assert gate(worst, None, CONFIG) == {"promote": True, "reasons": ["nothing in service"]}
    assert gate(worst, IN_SERVICE, GateConfig(loss_tolerance=1.5, rouge_tolerance=0.5, checks_tolerance=14))["promote"]
