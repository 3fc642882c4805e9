"""One retraining run, start to finish, in its own process: dataset, adapter, classifier, evaluation.

Started by the app (`python -m finetune.worker RUN_ID`) or the CLI; progress and results go to the
run's row in the database, so the console shows them live and a restart shows an interrupted run.
"""

import logging
import os
import sys
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import httpx
import yaml
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bot.domain import DomainPack
from bot.replicas import first_healthy
from bot.vllm_admin import load_adapter_into_vllm
from conversations import crud
from conversations.db import make_engine
from conversations.models import RunStatus, utcnow
from conversations.pii import mask_pii
from core.settings import Settings, get_settings
from finetune.classifiers import retrain_classifier
from finetune.customer_checks import customer_check_scores, customer_dialogue
from finetune.dataset import Dataset, DatasetRecipe, SourceConversation
from finetune.devices import training_device
from finetune.distributed import train_lora_processes, training_processes
from finetune.evaluate import (
    GateConfig,
    ModelScores,
    assistant_loss_sums,
    by_source,
    gate,
    report,
    source_scores,
    with_source_losses,
)
from finetune.plan import (
    TRAINED_ON,
    RunPlan,
    Selection,
    conversation_key,
    learned_keys,
    make_plan,
    measured_speed,
    record_learned,
    select_records,
    source_conversations,
    token_counts,
    training_dataset,
)
from finetune.preference import PreferenceRecipe, preference_pairs, preference_result, train_preference
from finetune.safety_checks import judged_checks
from finetune.seed import training_pack, with_system
from finetune.selection import train_selector_version
from finetune.sft import LoraRecipe, TrainingCancelled, compatible_adapter, shares_system_text, train_lora
from runtime.dialogue import live_articles
from runtime.registry import AdapterRegistry, promote

logger = logging.getLogger(__name__)

RECIPES = Path(__file__).parent / "recipes"


def retrain_selector(
    settings: Settings, pack: DomainPack, engine: Engine, reviewed: list[list[dict[str, str]]]
) -> dict:
    """Train an answer selector on the live help content, the run's reviewed conversations and the questions
    teammates answered where the bot could not; promoted unless it decides held-out questions worse."""
    with Session(engine) as session:
        articles = live_articles(session)
        gaps = crud.answered_gaps(session=session)
    trained = train_selector_version(settings, pack, articles, reviewed=[*reviewed, *gaps])
    return {"name": trained.name, "promoted": trained.promoted, "reason": trained.reason}


def _recipe_values(base_model_dir: Path) -> tuple[str, dict]:
    path = RECIPES / f"{base_model_dir.name}.yaml"
    path = path if path.exists() else RECIPES / "default.yaml"
    return path.name, yaml.safe_load(path.read_text()) or {}


def load_recipe(base_model_dir: Path, overrides: dict | None = None) -> LoraRecipe:
    """The YAML recipe named after the base model's folder, else the default one (its SFT fields)."""
    name, values = _recipe_values(base_model_dir)
    values.pop("preference", None)
    unknown = set(values) - {f.name for f in fields(LoraRecipe)}
    if unknown:
        raise ValueError(f"{name}: unknown recipe fields {sorted(unknown)}")
    return LoraRecipe(**{**values, **(overrides or {})})


def load_preference_recipe(base_model_dir: Path, overrides: dict | None = None) -> PreferenceRecipe:
    """The `preference:` section of the same YAML recipe (DPO after SFT)."""
    name, values = _recipe_values(base_model_dir)
    section = values.get("preference") or {}
    unknown = set(section) - {f.name for f in fields(PreferenceRecipe)}
    if unknown:
        raise ValueError(f"{name}: unknown preference fields {sorted(unknown)}")
    return PreferenceRecipe(**{**section, **(overrides or {})})


@dataclass
class PreparedRun:
    """A run's dataset, what it will train on, and its plan."""

    sources: list[SourceConversation]
    dataset: Dataset
    recipe: LoraRecipe
    selection: Selection
    plan: RunPlan
    in_service: str | None
    init_adapter: Path | None
    """The adapter training starts from (the one in service, when warm start applies)."""
    learned: set[str]


def prepare_run(settings: Settings, pack: DomainPack, engine, recipe_overrides: dict | None = None) -> PreparedRun:
    """Build the dataset and choose what to train on: every conversation the adapter training starts from has not
    learned, plus a replay sample; the plan says how many tokens that is and how long the run may take."""
    from transformers import AutoTokenizer

    with Session(engine) as session:
        sources = source_conversations(session, pack)
    dataset = training_dataset(sources, DatasetRecipe())
    recipe = load_recipe(settings.base_model_dir, recipe_overrides)
    registry = AdapterRegistry(settings.adapters_dir)
    in_service = registry.active()
    init_adapter = None
    if in_service and recipe.warm_start and compatible_adapter(registry.path(in_service), recipe):
        init_adapter = registry.path(in_service)
    learned = learned_keys(init_adapter)
    if init_adapter is not None and not (init_adapter / TRAINED_ON).exists():
        # An adapter from before runs recorded what they learned: the seed adapter learned the seed conversations
        # at first start and every later run replayed them, so only the company's conversations count as new.
        learned = {conversation_key(record) for record in dataset.split("train") if record.source == "seed"}
    selection = select_records(dataset.split("train"), learned, recipe)
    tokenizer = AutoTokenizer.from_pretrained(settings.base_model_dir)
    counts = token_counts(tokenizer, [with_system(pack, r.messages, r.intent) for r in selection.records])
    speed = measured_speed(registry.path(name) for name in reversed(registry.versions()))
    plan = make_plan(selection, counts, recipe, speed, shares_system_text(recipe, training_device()))
    recipe = replace(recipe, max_seq_len=plan.max_seq_len)
    return PreparedRun(sources, dataset, recipe, selection, plan, in_service, init_adapter, learned)


def plan_preview(settings: Settings, engine) -> dict:
    """The plan a run started now would follow, as its progress shows it: the app's `RunPlanner`
    (runtime/training.py), so that a queued run shows its plan before a worker claims it."""
    return asdict(prepare_run(settings, training_pack(settings), engine).plan)


def plan_summary(plan: dict) -> str:
    """One line about a plan, for logs and the CLI."""
    return (
        f"{plan['new_conversations']} new conversation(s) + {plan['replay_conversations']} replayed, "
        f"{plan['tokens']} tokens in {plan['steps']} step(s): about {plan['estimated_s'] / 60:.1f} min "
        f"at {plan['tokens_per_second']:g} tokens/s, time bound {plan['time_bound_s'] / 60:.1f} min"
        + "".join(f"; {note}" for note in plan.get("notes") or [])
    )


def model_server_busy(settings: Settings):
    """Whether any vLLM replica is generating or has requests waiting (read from its Prometheus metrics)."""

    def busy() -> bool:
        for url in settings.vllm_replica_urls:
            text = httpx.get(f"{url.rstrip('/')}/metrics", timeout=2).text
            for line in text.splitlines():
                waiting = line.startswith(("vllm:num_requests_running", "vllm:num_requests_waiting"))
                if waiting and float(line.rsplit(" ", 1)[-1]) > 0:
                    return True
        return False

    return busy


class RunReporter:
    """Writes a run's progress to its database row, at most about once a second."""

    def __init__(self, engine, run_id: int) -> None:
        self.engine = engine
        self.run_id = run_id
        self.progress: dict = {"stage": "starting", "curve": [], "validation": []}
        self._last_write = 0.0
        self._stage_started: float | None = None

    def update(self, **changes: object) -> None:
        with Session(self.engine) as session:
            crud.update_training_run(session=session, run_id=self.run_id, **changes)

    def stage(self, name: str) -> None:
        """Enter a stage; the seconds spent in the previous one are kept in progress["stage_seconds"]."""
        logger.info("run %d: %s", self.run_id, name)
        now = time.monotonic()
        previous = self.progress.get("stage")
        if previous and previous != "starting" and self._stage_started is not None:
            seconds = dict(self.progress.get("stage_seconds") or {})
            seconds[previous] = round(seconds.get(previous, 0) + now - self._stage_started, 1)
            self.progress["stage_seconds"] = seconds
        self._stage_started = now
        self.progress["stage"] = name
        self.update(progress=dict(self.progress))

    def step(self, step: int, total: int, loss: float, started: float, bound_s: float | None = None) -> None:
        elapsed = time.monotonic() - started
        eta = elapsed / step * (total - step)  # packed rows are all about one size, so steps take about as long
        if bound_s is not None:
            eta = min(eta, max(0.0, bound_s - elapsed))
        self.progress.update(step=step, total=total, loss=round(loss, 4), eta_s=round(eta))
        self.progress["curve"] = [*self.progress["curve"], [step, round(loss, 4)]]
        if time.monotonic() - self._last_write > 1.0 or step == total:
            self._last_write = time.monotonic()
            self.update(progress=dict(self.progress))

    def preference_step(self, step: int, total: int, loss: float, started: float) -> None:
        elapsed = time.monotonic() - started
        self.progress["preference"] = {"step": step, "total": total, "loss": round(loss, 4),
                                       "eta_s": round(elapsed / max(step, 1) * (total - step))}  # fmt: skip
        if time.monotonic() - self._last_write > 1.0 or step == total:
            self._last_write = time.monotonic()
            self.update(progress=dict(self.progress))

    def validation(self, step: int, loss: float) -> None:
        self.progress["validation"] = [*self.progress["validation"], [step, round(loss, 4)]]
        self.update(progress=dict(self.progress))

    def cancel_requested(self) -> bool:
        with Session(self.engine) as session:
            return crud.get_training_run(session=session, run_id=self.run_id).cancel_requested


def run_folder(settings: Settings, run) -> Path:
    """The run's checkpoint and SFT-adapter folder. Named by id and creation time: ids restart with a new
    database, and a new run must never resume from another run's checkpoint in the same data folder."""
    return settings.data_dir / "runs" / f"{run.id}-{run.created_at:%Y%m%dT%H%M%S}"


def execute_run(
    run_id: int, settings: Settings, recipe_overrides: dict | None = None, preference_overrides: dict | None = None
) -> None:
    """Run one retraining job; never raises: the outcome is written to the run's row."""
    engine = make_engine(settings.resolved_database_url)
    reporter = RunReporter(engine, run_id)
    with Session(engine) as session:
        run = crud.get_training_run(session=session, run_id=run_id)
        adapter_name = run.adapter
        run_dir = run_folder(settings, run)
    reporter.update(status=RunStatus.running, started_at=utcnow(), worker_pid=os.getpid(), error=None)
    background = ThreadPoolExecutor(1, thread_name_prefix="in-service-replies")
    try:
        pack = training_pack(settings)
        reporter.stage("dataset")
        prepared = prepare_run(settings, pack, engine, recipe_overrides)
        sources, dataset, recipe, plan = prepared.sources, prepared.dataset, prepared.recipe, prepared.plan
        reporter.progress["plan"] = asdict(plan)
        logger.info("run %d plan: %s", run_id, plan_summary(asdict(plan)))
        dataset_recipe = DatasetRecipe()
        dataset_dir = settings.data_dir / "datasets" / dataset.content_hash[:16]
        if not dataset_dir.exists():
            dataset.save(dataset_dir)
        reporter.update(dataset_hash=dataset.content_hash, card=dataset.card)

        registry = AdapterRegistry(settings.adapters_dir)
        # With no adapter promoted yet (a pack without seed conversations), customers get the base model: the
        # candidate must not be worse than that.
        in_service = registry.active() or settings.served_model_name
        evaluation = dataset.held_out(settings.eval_max_conversations)
        adapter_name = adapter_name or registry.next_name()
        reporter.update(adapter=adapter_name)
        output_dir = registry.path(adapter_name)
        preference = load_preference_recipe(settings.base_model_dir, preference_overrides)
        pairs = preference_pairs(sources, dataset_recipe, mask=mask_pii) if preference.method != "off" else []
        use_preference = preference.method != "off" and len(pairs) >= preference.min_pairs
        # With a preference stage, SFT writes into the run's folder and DPO writes the candidate version.
        sft_dir = run_dir / "sft-adapter" if use_preference else output_dir
        if not output_dir.exists():
            if not sft_dir.exists():
                reporter.stage("training")
                processes = training_processes(recipe)
                reporter.progress["processes"] = processes
                started = time.monotonic()
                selected = prepared.selection.records
                sft = dict(
                    base_model_dir=settings.base_model_dir,
                    conversations=[with_system(pack, r.messages, r.intent) for r in selected],
                    keys=[conversation_key(r) for r in selected],
                    validation=[with_system(pack, r.messages, r.intent) for r in dataset.split("validation")],
                    output_dir=sft_dir,
                    recipe=recipe,
                    on_step=lambda step, total, loss: reporter.step(step, total, loss, started, plan.time_bound_s),
                    on_eval=reporter.validation,
                    should_stop=reporter.cancel_requested,
                    init_adapter=prepared.init_adapter,
                    time_bound_s=plan.time_bound_s,
                    tuning_cache=settings.cpu_tuning_path,
                )
                if processes > 1:
                    train_lora_processes(processes=processes, work_dir=run_dir, **sft)
                else:
                    train_lora(checkpoint_dir=run_dir, model_server_busy=model_server_busy(settings), **sft)
            if use_preference:
                reporter.stage("preference")
                started = time.monotonic()
                train_preference(
                    base_model_dir=settings.base_model_dir,
                    adapter_dir=sft_dir,
                    prompts=[with_system(pack, pair.prompt, pair.intent) for pair in pairs],
                    pairs=pairs,
                    output_dir=output_dir,
                    recipe=preference,
                    on_step=lambda step, total, loss: reporter.preference_step(step, total, loss, started),
                    should_stop=reporter.cancel_requested,
                )

        if not (output_dir / TRAINED_ON).exists():
            covered = record_learned(output_dir, sft_dir, prepared.learned)
            reporter.progress["learned"] = {"new": plan.new_conversations, "covered": covered,
                                            "replayed": plan.replay_conversations}  # fmt: skip
        # The adapter in service is scored (vLLM's replies, then its loss in one more thread) beside the classifier
        # and the candidate, so vLLM batches both adapters' replies. Scored during training instead, it took the
        # cores training had sped up to use: the same run took 652 s that way (training 109 tokens/s).
        service_scores = background.submit(model_scores, settings, pack, evaluation, in_service)
        reporter.stage("classifier")
        with Session(engine) as session:
            relabels = crud.relabelled_examples(session=session)
        classifier = retrain_classifier(settings, pack, relabels)
        reporter.update(classifier=classifier.get("name"))

        selector = None
        if settings.answer_selection == "learned":
            reporter.stage("selector")
            selector = retrain_selector(settings, pack, engine, [r.messages for r in prepared.selection.records])

        reporter.stage("evaluation")
        result = evaluate_candidate(settings, pack, evaluation, adapter_name, in_service, service_scores)
        result["classifier"] = classifier
        if selector is not None:
            result["selector"] = selector
        result["preference"] = preference_result(output_dir) or {
            "skipped": "preference stage off in the recipe"
            if preference.method == "off"
            else f"{len(pairs)} corrected replies to learn preferences from; the stage needs {preference.min_pairs}"
        }
        reporter.update(report=result)
        promoted = bool(result["decision"]["promote"])
        if promoted:
            promote(registry, adapter_name)
        reporter.stage("done")
        reporter.update(
            status=RunStatus.finished, finished_at=utcnow(), promoted=promoted, progress=dict(reporter.progress)
        )
    except TrainingCancelled:
        reporter.update(status=RunStatus.cancelled, finished_at=utcnow())
    except Exception as error:  # noqa: BLE001 - every failure must reach the run's row
        logger.exception("run %d failed", run_id)
        reporter.update(
            status=RunStatus.failed, finished_at=utcnow(), error=f"{error}\n{traceback.format_exc()[-1500:]}"
        )
    finally:
        background.shutdown(wait=False, cancel_futures=True)


def _eval_limits(settings: Settings) -> dict:
    return {"max_turns": settings.eval_max_turns, "max_checks": settings.eval_max_checks,
            "max_tokens": settings.eval_reply_tokens}  # fmt: skip


def model_scores(settings: Settings, pack: DomainPack, evaluation: list, model: str) -> ModelScores:
    """A served model (an adapter version, or the base model's served name) on the evaluation set: its replies
    scored through vLLM (ROUGE-L, must-pass checks) and its loss on the reference replies."""
    vllm_url = first_healthy(settings.vllm_replica_urls)
    adapter_dir = None
    if model != settings.served_model_name:
        adapter_dir = AdapterRegistry(settings.adapters_dir).path(model)
        load_adapter_into_vllm(vllm_url, model, adapter_dir)
    generated = source_scores(vllm_url=vllm_url, model=model, records=evaluation, pack=pack, **_eval_limits(settings))
    sums = assistant_loss_sums(settings.base_model_dir, adapter_dir, by_source(evaluation), pack)
    return with_source_losses(generated, sums)


def with_customer_checks(settings: Settings, pack: DomainPack, vllm_url: str, scores: list[ModelScores | None]) -> None:
    """Add the must-pass checks as customers get them to each of `scores` (a model's, served by `vllm_url`); a
    failure to score them leaves them out, and the gate falls back to the bare model's checks."""
    scored = [score for score in scores if score is not None]
    checks = judged_checks(pack)[1][: settings.eval_max_checks]
    if not checks or not scored:
        return
    engine = make_engine(settings.resolved_database_url)
    try:
        dialogue = customer_dialogue(settings, pack, engine, vllm_url)
        found = customer_check_scores(dialogue, [score.model for score in scored], checks)
    except Exception:  # noqa: BLE001 - the gate still has the bare model's checks
        logger.exception("could not score the must-pass checks as customers get them")
        return
    finally:
        engine.dispose()
    for score in scored:
        customer = found[score.model]
        score.customer_checks_passed, score.customer_checks_total = customer.passed, customer.total
        score.failed_customer_checks = customer.failed
        score.customer_check_results = customer.results


def evaluate_candidate(
    settings: Settings,
    pack: DomainPack,
    evaluation: list,
    candidate: str,
    in_service: str | None,
    service_scores: Future | None = None,
) -> dict:
    """Score the candidate and the model in service (an adapter, or the base model's served name) on the same
    held-out set, and gate.

    `service_scores` holds the in-service adapter's scores when they were started earlier; if that attempt
    failed (vLLM restarting, say) they are computed again here.
    """
    registry = AdapterRegistry(settings.adapters_dir)
    # With several replicas the candidate is loaded into one and judged there; promotion loads it everywhere.
    vllm_url = first_healthy(settings.vllm_replica_urls)
    load_adapter_into_vllm(vllm_url, candidate, registry.path(candidate))
    with ThreadPoolExecutor(1, thread_name_prefix="candidate-replies") as pool:
        # vLLM generates while this process computes the loss, so both cores are busy.
        replies = pool.submit(source_scores, vllm_url=vllm_url, model=candidate, records=evaluation, pack=pack,
                              **_eval_limits(settings))  # fmt: skip
        sums = assistant_loss_sums(settings.base_model_dir, registry.path(candidate), by_source(evaluation), pack)
        candidate_scores = with_source_losses(replies.result(), sums)
    service = None
    if in_service is not None and service_scores is not None:
        try:
            service = service_scores.result()
        except Exception as error:  # noqa: BLE001 - the earlier attempt is only a head start
            logger.info("in-service adapter scored again (%s)", error)
    if in_service is not None and service is None:
        service = model_scores(settings, pack, evaluation, in_service)
    with_customer_checks(settings, pack, vllm_url, [candidate_scores, service])
    config = GateConfig(
        loss_tolerance=settings.promote_loss_tolerance,
        rouge_tolerance=settings.promote_rouge_tolerance,
        checks_tolerance=settings.promote_checks_tolerance,
        seed_loss_tolerance=settings.promote_seed_loss_tolerance,
        seed_rouge_tolerance=settings.promote_seed_rouge_tolerance,
        seed_checks_tolerance=settings.promote_seed_checks_tolerance,
    )
    outcome = report(candidate_scores, service, gate(candidate_scores, service, config))
    outcome["evaluation_conversations"] = len(evaluation)
    outcome["gate"] = asdict(config)
    return outcome


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    execute_run(int(sys.argv[1]), get_settings())


if __name__ == "__main__":
    main()
