"""The gate decides on the company's own conversations; the seed conversations guard against forgetting with a
tolerance, and block a candidate only beyond it."""

from finetune.evaluate import GateConfig, ModelScores, gate

CONFIG = GateConfig(loss_tolerance=0.02, rouge_tolerance=0.01, seed_loss_tolerance=0.10, seed_rouge_tolerance=0.05,
                    seed_checks_tolerance=2)  # fmt: skip


def scores(
    store: tuple[float, float] | None, seed: tuple[float, float], checks: int = 10, customer_checks: int | None = None
) -> ModelScores:
    """Scores with (loss, ROUGE-L) on the company's conversations (None: none held out) and on the seeds, and
    must-pass checks passed by the bare model and (when given) as customers get them, of 10."""
    by_source = {"seed": {"loss": seed[0], "rouge_l": seed[1]}}
    if store is not None:
        by_source["store"] = {"loss": store[0], "rouge_l": store[1]}
    # The overall numbers mix both sources, dominated by the seeds, as on a small store.
    scored = ModelScores("m", loss=seed[0], rouge_l=seed[1], checks_passed=checks, by_source=by_source)
    if customer_checks is not None:
        scored.customer_checks_passed, scored.customer_checks_total = customer_checks, 10
    return scored


IN_SERVICE = scores(store=(2.0, 0.20), seed=(1.0, 0.45))


def test_better_on_the_company_and_slightly_worse_on_seeds_is_promoted() -> None:
    # The old gate compared the mixed numbers and kept the adapter in service here (0.42 < 0.45 - 0.01).
    candidate = scores(store=(1.6, 0.33), seed=(1.05, 0.42))
    decision = gate(candidate, IN_SERVICE, CONFIG)
    assert decision["promote"], decision
    assert decision["decided_on"] == "company's conversations"


def test_forgetting_beyond_the_tolerance_blocks_a_candidate_better_on_the_company() -> None:
    candidate = scores(store=(1.6, 0.33), seed=(1.2, 0.30))
    decision = gate(candidate, IN_SERVICE, CONFIG)
    assert not decision["promote"]
    assert all(reason.startswith("forgetting on seed conversations") for reason in decision["reasons"])
    assert len(decision["reasons"]) == 2  # both the loss and the ROUGE-L drop are named


def test_worse_on_the_company_is_kept_out_even_when_better_on_seeds() -> None:
    candidate = scores(store=(2.2, 0.15), seed=(0.8, 0.60))
    decision = gate(candidate, IN_SERVICE, CONFIG)
    assert not decision["promote"]
    assert [reason.split(":")[0] for reason in decision["reasons"]] == ["company's conversations"] * 2


def test_without_company_conversations_the_overall_scores_decide_as_before() -> None:
    in_service = scores(store=None, seed=(1.0, 0.45))
    slightly_worse = scores(store=None, seed=(1.05, 0.42))  # within the seed tolerance, beyond the normal one
    decision = gate(slightly_worse, in_service, CONFIG)
    assert not decision["promote"] and decision["decided_on"] == "all held-out conversations"
    assert gate(scores(store=None, seed=(0.9, 0.5)), in_service, CONFIG)["promote"]


def test_must_pass_checks_still_count_when_the_company_decides() -> None:
    candidate = scores(store=(1.6, 0.33), seed=(1.0, 0.45), checks=8)
    decision = gate(candidate, IN_SERVICE, CONFIG)
    assert not decision["promote"] and "must-pass checks" in decision["reasons"][0]


def test_checks_as_customers_get_them_decide_and_the_bare_model_only_guards_against_forgetting() -> None:
    in_service = scores(store=(2.0, 0.20), seed=(1.0, 0.45), checks=10, customer_checks=10)
    # The bare model words two policies the imported way, but customers would still be told the pack's facts.
    candidate = scores(store=(1.6, 0.33), seed=(1.0, 0.45), checks=8, customer_checks=10)
    assert gate(candidate, in_service, CONFIG)["promote"]
    forgot = scores(store=(1.6, 0.33), seed=(1.0, 0.45), checks=7, customer_checks=10)
    decision = gate(forgot, in_service, CONFIG)
    assert not decision["promote"] and decision["reasons"] == ["forgetting: the bare model passes 7 must-pass checks, "
                                                                "in service 10"]  # fmt: skip
    told_wrong = scores(store=(1.6, 0.33), seed=(1.0, 0.45), checks=10, customer_checks=9)
    decision = gate(told_wrong, in_service, CONFIG)
    assert not decision["promote"] and decision["reasons"] == ["passes 9 must-pass checks as customers get them, "
                                                                "in service 10"]  # fmt: skip


def test_the_bare_model_checks_decide_when_no_customer_path_was_scored_or_no_company_conversations() -> None:
    candidate = scores(store=(1.6, 0.33), seed=(1.0, 0.45), checks=9, customer_checks=None)
    in_service = scores(store=(2.0, 0.20), seed=(1.0, 0.45), checks=10, customer_checks=10)
    assert not gate(candidate, in_service, CONFIG)["promote"]
    seeds_only = scores(store=None, seed=(1.0, 0.45), checks=9, customer_checks=10)
    decision = gate(seeds_only, scores(store=None, seed=(1.0, 0.45), checks=10, customer_checks=10), CONFIG)
    assert not decision["promote"] and decision["reasons"] == ["passes 9 must-pass checks, in service 10"]
