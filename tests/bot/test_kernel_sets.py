"""The same question gets the same reply whichever CPU kernels compute the encoder's scores.

Runs the answer path (real encoder, a real intent classifier, the demo pack, answers from the passages) in child
processes whose environment makes PyTorch, oneDNN and MKL use the kernels of older CPUs, and compares the replies
to the development questions (tests/bench/bench_kernel_sets.py does the work and prints the same comparison).
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from bench_kernel_sets import KERNEL_SETS, development_questions, differences, run_kernel_sets  # noqa: E402

from bot.domain import default_pack_path, load_pack  # noqa: E402
from finetune.intents import ClassifierRecipe, examples_from_pack, train_intent_classifier  # noqa: E402


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classifier of the demo pack with only its head trained: quick, and routes like the product's (whether it
    routes well is tests/bot/test_intents.py's business)."""
    folder = tmp_path_factory.mktemp("classifier") / "intent"
    recipe = ClassifierRecipe(train_layers=0, epochs=1, min_steps=20, refit_min_share=1.0)
    train_intent_classifier(examples_from_pack(load_pack(default_pack_path())), output_dir=folder, recipe=recipe)
    return folder


def test_every_development_question_gets_the_same_reply_under_every_kernel_set(
    classifier_dir: Path, base_model_dir: Path
) -> None:
    sets = {name: env for name, env in KERNEL_SETS.items() if name in ("native", "avx2", "no-simd")}
    questions = development_questions()
    results = run_kernel_sets(questions, classifier_dir, base_model_dir, sets)
    assert all(len(replies) == len(questions) for replies in results.values())
    answered = [item for item in results["native"] if item["route"].startswith("answer") and item["passages"]]
    assert len(answered) >= len(questions) // 2, "the comparison must cover the answer path, not only fixed replies"
    assert differences(results) == []
