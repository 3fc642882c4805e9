"""Runs retraining jobs for the app: one at a time, each in its own worker process, and on a schedule.

Jobs live in the database, so a restarted app shows a job it lost as interrupted and can resume it. The app never
imports the trainer: the worker is a process of its own (`python -m finetune.worker`, or `supportbot worker` on
another machine), and the plan a run shows when it is queued comes from a planner handed in (`RunPlanner`).
"""

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session

from conversations import crud
from conversations.models import RunStatus, TrainingRun, utcnow
from core.process import die_with_parent_at_niceness, pid_alive
from core.settings import Settings

logger = logging.getLogger(__name__)

RunPlanner = Callable[[Settings, Engine], dict]
"""What a run started now would learn and how long it may take, as its progress shows it: the trainer's own
planning (finetune/worker.py's `plan_preview`), handed in by `supportbot start` so that the app does not import it."""


class TrainingManager:
    """Starts retraining workers and keeps the runs table honest about them."""

    def __init__(self, settings: Settings, engine: Engine, planner: RunPlanner | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.planner = planner
        self._workers: dict[int, subprocess.Popen] = {}

    def mark_lost_runs(self) -> int:
        """Runs left 'running' or 'queued' by a previous app process become 'interrupted'."""
        if self.settings.training_runner == "queue":
            return 0  # runs belong to `supportbot worker`, which marks the ones it lost itself
        with Session(self.engine) as session:
            lost = crud.training_runs_with_status(session=session, statuses=[RunStatus.running, RunStatus.queued])
            count = 0
            for run in lost:
                if run.id in self._workers or pid_alive(run.worker_pid) and run.status == RunStatus.running:
                    continue
                crud.update_training_run(session=session, run_id=run.id, status=RunStatus.interrupted)
                count += 1
        return count

    def start(self, trigger: str) -> TrainingRun:
        """Queue a run and start its worker; raises crud.RunAlreadyActive if one is going.

        The run's progress holds its plan from the start (what it will learn, the estimated time and the time
        bound), so whoever started it sees them before training begins; the worker plans again as it starts.
        """
        with Session(self.engine) as session:
            run = crud.create_training_run(session=session, trigger=trigger)
            plan = self.plan()
            if plan is not None:
                run = crud.update_training_run(session=session, run_id=run.id, progress={"plan": plan})
        self._spawn(run.id)
        return run

    def plan(self) -> dict | None:
        """What a run started now would train on and how long it may take; None if that cannot be worked out
        here, or no planner was handed in (the worker will tell, or fail with the reason)."""
        if self.planner is None:
            return None
        try:
            return self.planner(self.settings, self.engine)
        except Exception:  # noqa: BLE001 - a plan is a preview: the run itself reports what went wrong
            logger.exception("could not plan the retraining run")
            return None

    def resume(self, run_id: int) -> TrainingRun:
        """Queue a stopped run again and start its worker; raises crud.RunNotResumable otherwise."""
        with Session(self.engine) as session:
            run = crud.requeue_training_run(session=session, run_id=run_id)
        self._spawn(run_id)
        return run

    def cancel(self, run_id: int) -> TrainingRun:
        """Ask the worker to stop at its next step; it keeps a checkpoint for resume."""
        with Session(self.engine) as session:
            run = crud.get_training_run(session=session, run_id=run_id)
            if run.status == RunStatus.queued and run.id not in self._workers:
                return crud.update_training_run(session=session, run_id=run_id, status=RunStatus.cancelled)
            return crud.update_training_run(session=session, run_id=run_id, cancel_requested=True)

    def _spawn(self, run_id: int) -> None:
        if self.settings.training_runner == "queue":
            logger.info("retraining run %d queued for a `supportbot worker` to claim", run_id)
            return
        log_path = self.settings.logs_dir / f"training-run-{run_id}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            self._workers[run_id] = subprocess.Popen(
                [sys.executable, "-m", "finetune.worker", str(run_id)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # One thread at a low priority: vLLM keeps every core, and the kernel gives its threads about ten
                # times training's share of the one they share while customers wait (see Settings.training_nice).
                env={**os.environ, **self.settings.as_env(), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
                preexec_fn=die_with_parent_at_niceness(self.settings.training_nice),
            )
        logger.info("retraining run %d started (log: %s)", run_id, log_path)

    def reap(self) -> None:
        """Forget finished workers; a worker that died without reporting leaves its run interrupted."""
        for run_id, process in list(self._workers.items()):
            if process.poll() is None:
                continue
            del self._workers[run_id]
            with Session(self.engine) as session:
                run = crud.get_training_run(session=session, run_id=run_id)
                if run.status in (RunStatus.running, RunStatus.queued):
                    crud.update_training_run(
                        session=session,
                        run_id=run_id,
                        status=RunStatus.interrupted,
                        error=f"worker exited with code {process.returncode}",
                    )

    def due(self, now: datetime) -> str | None:
        """Why a scheduled run should start now, or None."""
        with Session(self.engine) as session:
            last = crud.latest_training_run(session=session)
            since = last.created_at if last is not None else None
            wanted = self.settings.retrain_after_reviews
            if wanted > 0 and crud.count_training_marks(session=session, since=since) >= wanted:
                return "schedule:reviews"
        if self.settings.retrain_daily_at:
            hour, minute = (int(part) for part in self.settings.retrain_daily_at.split(":"))
            today = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
            slot = today if now >= today else today - timedelta(days=1)
            if since is None or since.replace(tzinfo=now.tzinfo) < slot:
                return "schedule:daily"
        return None

    async def run_schedule(self, interval_s: float = 60.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                self.reap()
                reason = self.due(utcnow())
                if reason is not None:
                    self.start(reason)
            except crud.RunAlreadyActive:
                pass
            except Exception:  # noqa: BLE001 - the scheduler must keep running
                logger.exception("retraining schedule check failed")
