"""Retraining on another machine: with SUPPORTBOT_TRAINING_RUNNER=queue the app only queues runs, and
`supportbot worker` claims each exactly once (also when two look at the same moment) and trains it.
"""

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlmodel import Session
from typer.testing import CliRunner

from cli.main import app as cli
from conversations import crud
from conversations.db import make_engine, upgrade_db
from conversations.models import RunStatus
from core import settings as settings_module
from core.settings import Settings
from runtime.training import TrainingManager


@pytest.fixture(autouse=True)
def root_logging() -> Iterator[None]:
    """`supportbot worker` sets up logging as a process would; undo it for the tests that follow."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(params=["sqlite", "postgresql"])
def queue_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    url = f"sqlite:///{tmp_path / 'store.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    return Settings(data_dir=tmp_path, database_url=url, training_runner="queue")


def test_the_app_queues_and_one_worker_claims_each_run_once(queue_settings: Settings) -> None:
    engine = make_engine(queue_settings.resolved_database_url)
    upgrade_db(engine)
    manager = TrainingManager(queue_settings, engine)
    run = manager.start("manual")
    assert run.status == RunStatus.queued and manager._workers == {}, "no process is started on the app host"
    assert manager.mark_lost_runs() == 0, "an app restart leaves the worker's runs alone"
    with Session(engine) as first, Session(engine) as second:
        claimed = crud.claim_training_run(session=first, worker_pid=4242)
        assert claimed is not None and claimed.id == run.id and claimed.status == RunStatus.running
        assert crud.claim_training_run(session=second) is None
    with Session(engine) as session, pytest.raises(crud.RunAlreadyActive):
        crud.create_training_run(session=session, trigger="schedule:daily")
    engine.dispose()


def test_supportbot_worker_runs_the_queued_run_and_marks_a_lost_one(
    queue_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(queue_settings.resolved_database_url)
    upgrade_db(engine)
    with Session(engine) as session:
        lost = crud.create_training_run(session=session, trigger="manual")
        crud.update_training_run(session=session, run_id=lost.id, status=RunStatus.running)
    trained: list[int] = []
    # The training itself is covered by the learning-loop tests; here only the hand-over is checked.
    monkeypatch.setattr("finetune.worker.execute_run", lambda run_id, settings: trained.append(run_id))
    monkeypatch.setattr(settings_module, "get_settings", lambda: queue_settings)
    monkeypatch.setattr("cli.ops.get_settings", lambda: queue_settings)

    with Session(engine) as session:
        assert crud.get_training_run(session=session, run_id=lost.id).status == RunStatus.running
    result = CliRunner().invoke(cli, ["worker", "--once"])
    assert result.exit_code == 0, result.output
    with Session(engine) as session:
        assert crud.get_training_run(session=session, run_id=lost.id).status == RunStatus.interrupted
        queued = crud.create_training_run(session=session, trigger="manual")
    assert trained == []

    result = CliRunner().invoke(cli, ["worker", "--once"])
    assert result.exit_code == 0, result.output
    assert trained == [queued.id]
    with Session(engine) as session:
        assert crud.get_training_run(session=session, run_id=queued.id).status == RunStatus.running
    engine.dispose()


def claim_together(engine, start: threading.Barrier, worker: int) -> int | None:
    with Session(engine) as session:
        start.wait()  # every worker looks at the queue at the same moment
        claimed = crud.claim_training_run(session=session, worker_pid=1000 + worker)
        return claimed.id if claimed else None


def test_workers_claiming_at_the_same_moment_get_each_run_once(queue_settings: Settings) -> None:
    engine = make_engine(queue_settings.resolved_database_url, pool_size=8)
    upgrade_db(engine)
    workers = 8
    for _ in range(5):
        with Session(engine) as session:
            run = crud.create_training_run(session=session, trigger="manual")
        start = threading.Barrier(workers)
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(lambda worker, start=start: claim_together(engine, start, worker), range(workers)))
        assert sorted(results, key=lambda found: found is not None) == [None] * (workers - 1) + [run.id]
        with Session(engine) as session:
            crud.update_training_run(session=session, run_id=run.id, status=RunStatus.finished)
    engine.dispose()
