"""Fault benchmark: what customers lose when parts fail, and how long the app takes to recover.

Three faults, each against `supportbot start` (a real process) in front of a stand-in model server (a separate
process speaking vLLM's API, tests/utils/fake_vllm.py, that streams a grounded answer word by word):

- model-killed: the model server is SIGKILLed while customers' replies stream, then started again;
- app-killed: the app is SIGKILLed while replies stream, then started again (crash recovery answers and flags);
- disk-full: the SQLite database sits on a small tmpfs that fills up, then is grown (needs root to mount);
- training-killed: a retraining worker is SIGKILLed mid-training (after its first checkpoint); the next start marks
  the run interrupted, the adapter in service is untouched and no half-written version appears, and the resumed run
  continues from the checkpoint and writes an adapter that loads.

For each it prints customer messages sent and acknowledged, messages lost (acknowledged but not stored, or left
without any reply after recovery), 5xx answers (500 and 503 apart), and the recovery time.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.utils.ports import free_port  # noqa: E402
from tests.utils.server import stop_process  # noqa: E402

QUESTION = "How many days do I have to return an item?"
ANSWER = (
    "You can return most items within 30 days of delivery. Items must be unused and in their original packaging, "
    "with all parts and accessories. To start a return, go to Account > Orders and choose Start a return."
)


def serve_stand_in(port: int, delay_s: float) -> None:
    """Run the stand-in model server on `port` until killed (the child process of `stand_in`)."""
    from tests.utils.fake_vllm import FakeVLLM

    server = FakeVLLM("stand-in", pieces=tuple(f"{word} " for word in ANSWER.split()), piece_delay_s=delay_s)
    server.port, server.url = port, f"http://127.0.0.1:{port}"
    server.start()
    while True:
        time.sleep(3600)


@contextmanager
def stand_in(port: int, delay_s: float) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve-stand-in", str(port), "--delay", str(delay_s)], cwd=ROOT
    )
    wait_http(f"http://127.0.0.1:{port}/health", process, "the stand-in model server")
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_http(url: str, process: subprocess.Popen, what: str, timeout_s: float = 300) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{what} did not start within {timeout_s:.0f} s")


@dataclass
class App:
    """`supportbot start` with its environment, restartable on the same port and database."""

    env: dict[str, str]
    log: Path
    url: str
    process: subprocess.Popen | None = None

    def start(self) -> float:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "cli", "start", "--skip-prepare"], cwd=ROOT,
                                            env=self.env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        return wait_http(f"{self.url}/healthz", self.process, f"the app (log: {self.log})")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout_s=60)


def make_app(data_dir: Path, database_url: str, model_port: int, base_model: Path) -> App:
    port = free_port()
    env = {
        **os.environ, "SUPPORTBOT_DATA_DIR": str(data_dir), "SUPPORTBOT_DATABASE_URL": database_url,
        "SUPPORTBOT_PORT": str(port), "SUPPORTBOT_VLLM_URLS": f'["http://127.0.0.1:{model_port}"]',
        "SUPPORTBOT_VLLM_REFRESH_S": "1", "SUPPORTBOT_BASE_MODEL": str(base_model),
        "SUPPORTBOT_UNANSWERED_AFTER_S": "5", "SUPPORTBOT_RECOVERY_EVERY_S": "1",
        "SUPPORTBOT_RETENTION_EVERY_HOURS": "0", "SUPPORTBOT_NEW_CONVERSATIONS_PER_MINUTE_ADDRESS": "100000",
        "SUPPORTBOT_RATE_LIMIT_PER_MINUTE_ADDRESS": "100000", "SUPPORTBOT_DB_WAIT_S": "2",
    }  # fmt: skip
    return App(env=env, log=data_dir / "app.log", url=f"http://127.0.0.1:{port}")


@dataclass
class Tally:
    """What customers saw: statuses, acknowledged messages (their conversation ids) and reply kinds."""

    statuses: Counter = field(default_factory=Counter)
    acknowledged: list[str] = field(default_factory=list)
    replies: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, status: int | str, conversation_id: str | None = None, reply: str | None = None) -> None:
        with self.lock:
            self.statuses[status] += 1
            if conversation_id:
                self.acknowledged.append(conversation_id)
            if reply:
                self.replies[reply] += 1


def customer(url: str, tally: Tally) -> None:
    """One customer: open a conversation, send the question, read the reply stream to its end (or its break)."""
    conversation_id, acknowledged, kind = None, False, None
    try:
        with httpx.Client(base_url=url, timeout=60) as http:
            opened = http.post("/api/conversations", json={"channel": "web"})
            if opened.status_code != 201:
                tally.add(opened.status_code)
                return
            body = opened.json()
            conversation_id = body["conversation"]["id"]
            headers = {"Authorization": f"Bearer {body['token']}"}
            with http.stream("POST", f"/api/conversations/{conversation_id}/messages", json={"text": QUESTION},
                             headers=headers) as response:  # fmt: skip
                if response.status_code != 200:
                    tally.add(response.status_code)
                    return
                event = None
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        event = line.removeprefix("event: ")
                    elif line.startswith("data: ") and event == "customer_message":
                        acknowledged = True
                    elif line.startswith("data: ") and event == "bot_message":
                        data = json.loads(line.removeprefix("data: "))
                        kind = data.get("decision") or ("apology" if data.get("failed") else "answer")
            tally.add(200, conversation_id if acknowledged else None, kind)
    except httpx.HTTPError as error:
        # The stream broke (the app was killed): a message it had acknowledged still counts as sent.
        tally.add(type(error).__name__, conversation_id if acknowledged else None, kind)


def crowd(url: str, customers: int, tally: Tally) -> list[threading.Thread]:
    threads = [threading.Thread(target=customer, args=(url, tally)) for _ in range(customers)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    return threads


def unanswered(database_url: str, conversation_ids: list[str]) -> tuple[int, int]:
    """(acknowledged customer messages not stored, conversations whose last message is still the customer's)."""
    from sqlmodel import Session, select

    from conversations.db import make_engine
    from conversations.models import Message, Role

    engine = make_engine(database_url)
    missing = waiting = 0
    with Session(engine) as session:
        for conversation_id in conversation_ids:
            statement = select(Message).where(Message.conversation_id == conversation_id).order_by(Message.id)
            messages = session.exec(statement).all()
            missing += not any(m.role == Role.customer and m.text == QUESTION for m in messages)
            waiting += bool(messages) and messages[-1].role == Role.customer
    engine.dispose()
    return missing, waiting


def answered_ok(url: str) -> bool:
    tally = Tally()
    customer(url, tally)
    return tally.replies.get("answer", 0) == 1


def report(name: str, tally: Tally, lost_unstored: int, lost_unanswered: int, recovery_s: float | None) -> dict:
    five = {str(k): v for k, v in tally.statuses.items() if isinstance(k, int) and k >= 500}
    row = {
        "fault": name,
        "acknowledged": len(tally.acknowledged),
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items(), key=str)},
        "replies": dict(tally.replies),
        "lost_not_stored": lost_unstored,
        "lost_unanswered": lost_unanswered,
        "5xx": five,
        "recovery_s": None if recovery_s is None else round(recovery_s, 1),
    }
    print(json.dumps(row))
    return row


def model_killed(args: argparse.Namespace, folder: Path) -> dict:
    model_port = free_port()
    database_url = f"sqlite:///{folder / 'app.db'}"
    app = make_app(folder, database_url, model_port, args.base_model)
    with stand_in(model_port, args.delay) as model:
        app.start()
        try:
            tally = Tally()
            threads = crowd(app.url, args.customers, tally)
            time.sleep(args.kill_after)
            model.kill()
            model.wait()
            for thread in threads:
                thread.join()
            with stand_in(model_port, args.delay):
                restarted = time.monotonic()
                while not answered_ok(app.url):
                    time.sleep(0.5)
                recovery = time.monotonic() - restarted
            missing, waiting = unanswered(database_url, tally.acknowledged)
            return report("model-killed", tally, missing, waiting, recovery)
        finally:
            app.stop()


def app_killed(args: argparse.Namespace, folder: Path) -> dict:
    model_port = free_port()
    database_url = f"sqlite:///{folder / 'app.db'}"
    app = make_app(folder, database_url, model_port, args.base_model)
    with stand_in(model_port, args.delay):
        app.start()
        try:
            tally = Tally()
            threads = crowd(app.url, args.customers, tally)
            time.sleep(args.kill_after)
            app.kill()
            for thread in threads:
                thread.join()
            restarted = time.monotonic()
            app.start()  # the recovery time includes the restart: that is what the customer waits through
            deadline = restarted + 300
            while unanswered(database_url, tally.acknowledged)[1] and time.monotonic() < deadline:
                time.sleep(0.5)
            recovery = time.monotonic() - restarted
            missing, waiting = unanswered(database_url, tally.acknowledged)
            return report("app-killed", tally, missing, waiting, recovery)
        finally:
            app.stop()


def disk_full(args: argparse.Namespace, folder: Path) -> dict | None:
    disk = folder / "small-disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.disk_kib}k", "tmpfs", str(disk)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        print(json.dumps({"fault": "disk-full", "skipped": f"cannot mount a tmpfs: {mounted.stderr.strip()}"}))
        return None
    model_port = free_port()
    database_url = f"sqlite:///{disk / 'app.db'}"
    app = make_app(folder, database_url, model_port, args.base_model)
    try:
        with stand_in(model_port, 0.0):
            app.start()
            try:
                tally = Tally()
                # Fill the disk: customers one after another until twenty in a row are refused.
                refused = 0
                while refused < 20 and sum(tally.statuses.values()) < 20_000:
                    before = len(tally.acknowledged)
                    customer(app.url, tally)
                    refused = refused + 1 if len(tally.acknowledged) == before else 0
                subprocess.run(["mount", "-o", f"remount,size={args.disk_kib * 64}k", str(disk)], check=True)
                grown = time.monotonic()
                while not answered_ok(app.url) and time.monotonic() - grown < 120:
                    time.sleep(0.5)
                recovery = time.monotonic() - grown
                deadline = time.monotonic() + 30  # the sweep answers what the full disk left waiting
                while unanswered(database_url, tally.acknowledged)[1] and time.monotonic() < deadline:
                    time.sleep(0.5)
                missing, waiting = unanswered(database_url, tally.acknowledged)
                return report("disk-full", tally, missing, waiting, recovery)
            finally:
                app.stop()
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def _file_hashes(folder: Path) -> dict[str, str]:
    from conversations.backup import sha256

    return {str(path.relative_to(folder)): sha256(path) for path in sorted(folder.rglob("*")) if path.is_file()}


def _seed_reviewed_history(engine, count: int) -> None:
    """`count` reviewed conversations marked for training, from a public e-commerce support data set (a company's
    history; see ../shared/data/README.md): enough new data for the run to pass its first checkpoint."""
    from sqlmodel import Session

    from conversations import crud
    from conversations.models import Role
    from tests.bench.bench_company_retrain import DATA, as_messages, load_cucom

    with Session(engine) as session:
        for item in load_cucom(DATA)[:count]:
            conversation, _ = crud.create_conversation(session=session, channel="widget")
            for message in as_messages(item):
                role = Role.customer if message["role"] == "user" else Role.bot
                crud.add_message(session=session, conversation_id=conversation.id, role=role, text=message["content"])
            crud.mark_conversation(session=session, conversation_id=conversation.id, reviewed=True,
                                   use_for_training=True, expected_version=0)  # fmt: skip


def training_killed(args: argparse.Namespace, folder: Path) -> dict:
    from peft import PeftModel
    from sqlmodel import Session
    from transformers import AutoModelForCausalLM

    from conversations import crud
    from conversations.db import init_db, make_engine
    from conversations.models import RunStatus
    from core.settings import Settings
    from finetune.sft import load_checkpoint
    from finetune.worker import run_folder
    from runtime.registry import AdapterRegistry
    from runtime.training import TrainingManager

    model_port = free_port()
    settings = Settings(
        data_dir=folder, database_url=f"sqlite:///{folder / 'app.db'}", base_model=args.base_model,
        vllm_urls=[f"http://127.0.0.1:{model_port}"],
    )  # fmt: skip
    engine = make_engine(settings.resolved_database_url)
    init_db(engine)
    registry = AdapterRegistry(settings.adapters_dir)
    # The adapter in service: a copy of the one the test data holds, if any (retraining then starts from it).
    source = AdapterRegistry(args.base_model.parent.parent / "adapters")
    in_service = source.active()
    if in_service is not None:
        shutil.copytree(source.path(in_service), registry.path("domain-v1"))
        registry.promote("domain-v1")
    before = {name: _file_hashes(registry.path(name)) for name in registry.versions()}
    _seed_reviewed_history(engine, args.reviewed)

    with stand_in(model_port, 0.0):
        manager = TrainingManager(settings, engine)
        started = time.monotonic()
        run = manager.start("fault-bench")
        worker = manager._workers[run.id]
        checkpoint = None
        while worker.poll() is None:
            with Session(engine) as session:
                current = crud.get_training_run(session=session, run_id=run.id)
            found = next(iter(run_folder(settings, current).rglob("checkpoint.pt")), None)
            if found is not None:
                checkpoint = found
                break
            time.sleep(0.5)
        if checkpoint is None:
            print(json.dumps({"fault": "training-killed", "error": "the run ended before its first checkpoint"}))
            return {}
        time.sleep(args.kill_after)  # mid-way between checkpoints, or while one is written
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        killed_at = time.monotonic() - started
        with Session(engine) as session:
            step_at_kill = crud.get_training_run(session=session, run_id=run.id).progress.get("step")

        # What the next start of the app finds.
        restarted = TrainingManager(settings, engine)
        marked = restarted.mark_lost_runs()
        with Session(engine) as session:
            status_after_kill = crud.get_training_run(session=session, run_id=run.id).status
        untouched = {name: _file_hashes(registry.path(name)) for name in registry.versions()} == before
        checkpoint_loads = True
        try:
            resumed_from = load_checkpoint(checkpoint)["state"]["step"]
        except Exception as error:  # noqa: BLE001 - a damaged checkpoint is what this measures
            checkpoint_loads, resumed_from = False, repr(error)

        resumed = time.monotonic()
        restarted.resume(run.id)
        restarted._workers[run.id].wait()
        with Session(engine) as session:
            final = crud.get_training_run(session=session, run_id=run.id)
        adapter_loads = False
        if final.adapter and registry.path(final.adapter).is_dir():
            base = AutoModelForCausalLM.from_pretrained(settings.base_model_dir)
            PeftModel.from_pretrained(base, registry.path(final.adapter))
            adapter_loads = True
        row = {
            "fault": "training-killed",
            "killed_after_s": round(killed_at, 1),
            "step_at_kill": step_at_kill,
            "runs_marked_interrupted": marked,
            "status_after_kill": str(status_after_kill),
            "versions_untouched_by_kill": untouched,
            "checkpoint_loads": checkpoint_loads,
            "resumed_from_step": resumed_from,
            "status_after_resume": str(final.status),
            "error": final.error,
            "resume_to_finish_s": round(time.monotonic() - resumed, 1),
            "new_adapter": final.adapter,
            "new_adapter_loads": adapter_loads,
            "in_service_unchanged": _file_hashes(registry.path("domain-v1")) == before.get("domain-v1")
            if in_service else None,
            "ok": status_after_kill == RunStatus.interrupted and untouched and checkpoint_loads
            and final.status == RunStatus.finished and adapter_loads,
        }  # fmt: skip
    engine.dispose()
    print(json.dumps(row))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=8, help="customers sending at once in the kill faults")
    parser.add_argument("--delay", type=float, default=0.25, help="seconds between the stand-in's words")
    parser.add_argument("--kill-after", type=float, default=4.0, help="seconds after the first customer to kill")
    parser.add_argument("--reviewed", type=int, default=150, help="reviewed conversations for training-killed")
    parser.add_argument("--disk-kib", type=int, default=2048, help="size of the small tmpfs for disk-full")
    parser.add_argument("--faults", default="model-killed,app-killed,disk-full,training-killed")
    parser.add_argument(
        "--base-model", type=Path, default=ROOT / "var" / "test-data" / "models" / "smollm2-135m-instruct"
    )
    parser.add_argument("--serve-stand-in", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_stand_in:
        serve_stand_in(args.serve_stand_in, args.delay)
        return
    faults = {
        "model-killed": model_killed, "app-killed": app_killed, "disk-full": disk_full,
        "training-killed": training_killed,
    }  # fmt: skip
    folder = Path(tempfile.mkdtemp(prefix="supportbot-faults-"))
    try:
        for name in args.faults.split(","):
            target = folder / name
            target.mkdir()
            faults[name](args, target)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
