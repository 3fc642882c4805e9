"""The gate pairs the two models turn by turn and check by check: a difference that resampling explains vetoes
nothing, a real drop does, and the same scores always get the same decision."""

import random

from finetune.evaluate import GateConfig, ModelScores, gate, paired_difference

CONFIG = GateConfig(loss_tolerance=0.02, rouge_tolerance=0.01, seed_rouge_tolerance=0.05, seed_checks_tolerance=2)


def turns(mean: float, count: int = 60, spread: float = 0.25, seed: int = 1) -> list[float]:
    """Per-turn ROUGE-L scores around `mean`, as noisy as real replies (0 to 1)."""
    rng = random.Random(seed)
    return [round(min(1.0, max(0.0, rng.gauss(mean, spread))), 4) for _ in range(count)]


def scored(store: list[float], seed: list[float], checks: dict[str, bool] | None = None) -> ModelScores:
    def part(values: list[float]) -> dict:
        return {"loss": 1.0, "rouge_l": round(sum(values) / len(values), 4), "turns": len(values)}

    checks = checks if checks is not None else {f"c{i}": True for i in range(15)}
    result = ModelScores("m", loss=1.0, rouge_l=part(store + seed)["rouge_l"], by_source={"store": part(store),
                         "seed": part(seed)}, turn_rouge={"store": store, "seed": seed}, check_results=checks,
                         checks_passed=sum(checks.values()), checks_total=len(checks))  # fmt: skip
    result.customer_checks_passed = result.customer_checks_total = 15
    return result


def test_the_interval_of_a_paired_difference() -> None:
    assert paired_difference([], []) is None and paired_difference([1.0], [1.0, 0.0]) is None
    same = paired_difference([0.3, 0.5, 0.7], [0.3, 0.5, 0.7])
    assert same is not None and same.mean == same.low == same.high == 0.0 and not same.worse
    drop = paired_difference([x - 0.1 for x in turns(0.4)], turns(0.4))
    assert drop is not None and drop.mean == -0.1 and drop.worse and drop.high < 0 and drop.items == 60
    assert paired_difference(turns(0.4, seed=2), turns(0.4, seed=3)) == paired_difference(
        turns(0.4, seed=2), turns(0.4, seed=3)
    ), "a fixed bootstrap seed: the same scores, the same interval"


def test_a_candidate_that_differs_by_noise_is_promoted_and_the_decision_shows_the_interval() -> None:
    in_service = scored(store=turns(0.30, seed=1), seed=turns(0.24, seed=2))
    # Another sample of replies from an equally good model: its mean is lower by more than the tolerance by chance.
    candidate = scored(store=turns(0.30, seed=4), seed=turns(0.24, seed=6))
    drop = in_service.by_source["store"]["rouge_l"] - candidate.by_source["store"]["rouge_l"]
    assert drop > CONFIG.rouge_tolerance, "the old rule, means and a tolerance, would have vetoed it"
    decision = gate(candidate, in_service, CONFIG)
    assert decision["promote"], decision
    interval = decision["differences"]["ROUGE-L, company's conversations"]
    assert interval["low"] < 0 < interval["high"] and interval["items"] == 60
    assert decision["summary"].startswith("promoted") and "interval" in decision["reasons"][-1]
    assert gate(candidate, in_service, CONFIG) == decision, "the same scores always get the same decision"


def test_a_candidate_that_really_forgets_is_kept_out_with_the_interval_named() -> None:
    in_service = scored(store=turns(0.20), seed=turns(0.24, seed=2))
    forgot = scored(store=turns(0.33, seed=4), seed=[max(0.0, round(x - 0.08, 4)) for x in turns(0.24, seed=2)])
    decision = gate(forgot, in_service, CONFIG)
    assert not decision["promote"]
    assert decision["reasons"][0].startswith("forgetting on seed conversations: ROUGE-L")
    assert "interval" in decision["reasons"][0] and decision["summary"].startswith("not promoted: forgetting")
    assert decision["differences"]["ROUGE-L, company's conversations"]["low"] > 0, "better on the company's"


def test_the_bare_models_checks_veto_only_a_drop_the_interval_confirms() -> None:
    in_service = scored(store=turns(0.2), seed=turns(0.24, seed=2), checks={f"c{i}": i < 13 for i in range(15)})
    # Four checks fewer, but two others newly passed: swaps between checks, not forgetting.
    swapped = {f"c{i}": i in (0, 1, 2, 3, 4, 5, 6, 7, 13) for i in range(15)}
    candidate = scored(store=turns(0.33, seed=4), seed=turns(0.24, seed=2), checks=swapped)
    assert candidate.checks_passed == 9 and in_service.checks_passed == 13
    assert gate(candidate, in_service, CONFIG)["promote"]
    # Every check the model in service passed and nine of them lost: forgetting.
    lost = {f"c{i}": i < 4 for i in range(15)}
    decision = gate(scored(store=turns(0.33, seed=4), seed=turns(0.24, seed=2), checks=lost), in_service, CONFIG)
    assert not decision["promote"]
    assert (
        decision["reasons"] == [decision["reasons"][0]]
        and "forgetting: the bare model passes 4" in (decision["reasons"][0])
    )
