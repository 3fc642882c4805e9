"""The must-pass checks as customers get them: the whole dialogue answers each check's message with the model
being judged, so a model that states another shop's policy fails the bare check while customers are still told
the help content's, and a reply customers would get that breaks a check fails, with the reply kept for staff."""

from pathlib import Path

import pytest

from bot.domain import Check, load_pack
from conversations.db import init_db, make_engine
from finetune.evaluate import generation_scores
from finetune.worker import with_customer_checks
from tests.conftest import stand_in_settings_at
from tests.utils.fake_vllm import FakeVLLM

# Another shop's return window, in the model's own words: what a model retrained on its history may say.
ANOTHER_SHOPS_POLICY = ("You have 14 days ", "to return any item.")


@pytest.mark.parametrize("answers_from", ["passages", "model"])
def test_a_wrong_bare_answer_that_never_reaches_customers_passes_as_they_get_it(
    answers_from: str, base_model_dir: Path, tmp_path: Path
) -> None:
    vllm = FakeVLLM("another-shop", pieces=ANOTHER_SHOPS_POLICY).start()
    try:
        settings = stand_in_settings_at(tmp_path, vllm, base_model_dir, answers_from=answers_from, eval_max_checks=1)
        init_db(make_engine(settings.resolved_database_url))
        pack = load_pack(settings.domain_pack)
        assert pack.checks[0].id == "return-window"
        scores = generation_scores(vllm_url=vllm.url, model="base", records=[], pack=pack, max_checks=1)
        with_customer_checks(settings, pack, vllm.url, [scores])
    finally:
        vllm.stop()
    assert (scores.checks_passed, scores.failed_checks) == (0, ["return-window"]), "the bare model says 14 days"
    # Told from the help content ("passages"), or the model's sentence refused by the answer check ("model").
    assert (scores.customer_checks_passed, scores.customer_checks_total) == (1, 1)
    assert scores.failed_customer_checks == {}


def test_a_check_broken_by_what_customers_are_told_fails_with_the_reply(base_model_dir: Path, tmp_path: Path) -> None:
    vllm = FakeVLLM("another-shop", pieces=ANOTHER_SHOPS_POLICY).start()
    try:
        settings = stand_in_settings_at(tmp_path, vllm, base_model_dir, eval_max_checks=1)
        init_db(make_engine(settings.resolved_database_url))
        pack = load_pack(settings.domain_pack)
        # A pack whose facts disagree with its own help content: customers are told the help content's 30 days.
        pack = pack.model_copy(update={"checks": [Check(id="return-window", prompt=pack.checks[0].prompt,
                                                        expect_none=["30 days"])]})  # fmt: skip
        scores = generation_scores(vllm_url=vllm.url, model="base", records=[], pack=pack, max_checks=1)
        with_customer_checks(settings, pack, vllm.url, [scores])
    finally:
        vllm.stop()
    assert (scores.customer_checks_passed, scores.customer_checks_total) == (0, 1)
    assert "30 days" in scores.failed_customer_checks["return-window"]
