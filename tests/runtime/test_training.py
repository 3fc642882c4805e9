"""Retraining jobs: one at a time, lost ones shown as interrupted, the schedule's triggers, the plan a run shows."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session

from conversations import crud
from conversations.db import init_db, make_engine
from conversations.models import Role, RunStatus
from core.settings import Settings
from runtime.training import TrainingManager


@pytest.fixture
def manager(tmp_path: Path) -> TrainingManager:
    settings = Settings(data_dir=tmp_path, retrain_after_reviews=2, retrain_daily_at="03:00")
    engine = make_engine(settings.resolved_database_url)
    init_db(engine)
    return TrainingManager(settings, engine)


def test_one_run_at_a_time_and_lost_runs_become_interrupted(manager: TrainingManager) -> None:
    with Session(manager.engine) as session:
        run = crud.create_training_run(session=session, trigger="manual")
        with pytest.raises(crud.RunAlreadyActive):
            crud.create_training_run(session=session, trigger="manual")
        crud.update_training_run(session=session, run_id=run.id, status=RunStatus.running, worker_pid=999_999_999)
    assert manager.mark_lost_runs() == 1
    with Session(manager.engine) as session:
        assert crud.get_training_run(session=session, run_id=run.id).status == RunStatus.interrupted
        finished = crud.create_training_run(session=session, trigger="manual")
        crud.update_training_run(session=session, run_id=finished.id, status=RunStatus.finished)
    with pytest.raises(crud.RunNotResumable):
        manager.resume(finished.id)


def test_cancelling_a_queued_run_that_never_started(manager: TrainingManager) -> None:
    with Session(manager.engine) as session:
        run = crud.create_training_run(session=session, trigger="manual")
    assert manager.cancel(run.id).status == RunStatus.cancelled


def test_schedule_triggers_on_new_reviews_and_daily(manager: TrainingManager) -> None:
    now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert manager.due(now) == "schedule:daily"  # never ran, and 03:00 has passed today
    with Session(manager.engine) as session:
        run = crud.create_training_run(session=session, trigger="manual")
        crud.update_training_run(session=session, run_id=run.id, status=RunStatus.finished)
    assert manager.due(datetime.now(UTC)) is None
    assert manager.due(datetime.now(UTC) + timedelta(days=1, hours=1)) == "schedule:daily"
    with Session(manager.engine) as session:
        for _ in range(2):
            conversation, _ = crud.create_conversation(session=session)
            crud.add_message(session=session, conversation_id=conversation.id, role=Role.customer, text="hi")
            crud.mark_conversation(session=session, conversation_id=conversation.id, reviewed=True,
                                   use_for_training=True, expected_version=0)  # fmt: skip
    assert manager.due(datetime.now(UTC)) == "schedule:reviews"


def test_a_queued_run_shows_the_planners_plan_and_a_failing_planner_starts_it_anyway(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, training_runner="queue")
    engine = make_engine(settings.resolved_database_url)
    init_db(engine)
    planned = TrainingManager(settings, engine, planner=lambda settings, engine: {"steps": 3}).start("manual")
    assert planned.progress == {"plan": {"steps": 3}}

    def broken(settings: Settings, engine: object) -> dict:
        raise OSError("no base model")

    with Session(engine) as session:
        crud.update_training_run(session=session, run_id=planned.id, status=RunStatus.finished)
    unplanned = TrainingManager(settings, engine, planner=broken).start("manual")
    assert unplanned.status == RunStatus.queued and "plan" not in (unplanned.progress or {})
