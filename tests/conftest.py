"""Shared fixtures: one prepared model stack and one running application per test session.

The application is started the way a user starts it (`supportbot start`), with its own vLLM child.
"""

import ctypes
import gc
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from serving.app import create_app
from tests.utils.browser import chromium
from tests.utils.fake_vllm import FakeVLLM
from tests.utils.ports import free_port
from tests.utils.postgres import PostgresServer, PostgresUnavailable
from tests.utils.server import stop_process, wait_ready

ROOT = Path(__file__).resolve().parent.parent
# Kept between local runs so the model is converted and the test adapter trained only once.
TEST_DATA = ROOT / "var" / "test-data"
# Enough optimizer steps to prove the adapter really trains, few enough to keep the suite quick.
TEST_ADAPTER_STEPS = 4
# Tests that check what the model wrote must not depend on how busy the machine is: no time limit on the model's
# first sentence in any app the tests start (tests/bot/test_dialogue.py tests the limit itself).
os.environ.setdefault("SUPPORTBOT_FIRST_SENTENCE_WITHIN_S", "0")
# The model writes the answers in the apps the tests start, so that the tests of streaming, recovery, replicas and
# promotion exercise it on ordinary policy questions. The product's default, answers made of the help passages' own
# sentences, is tested where it is set explicitly (tests/bot/test_grounded_live.py, tests/bot/test_dialogue.py).
os.environ.setdefault("SUPPORTBOT_ANSWERS_FROM", "model")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests marked `last` stop shared services, so they run after everything else.
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)


try:
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc
    _LIBC = None
_ME = psutil.Process()
_rss_after_cleanup = 0
# How much the test process may grow before the next cleanup: one in-process app is about 300 MB.
_CLEANUP_AFTER_GROWTH = 256 * 2**20


def pytest_runtest_logfinish(nodeid: str, location: tuple) -> None:
    # Many tests start an app in this process. Its objects can sit in reference cycles until the collector's rare
    # full pass, and glibc keeps the pages they freed: the suite once grew past 12 GiB (with a leak since fixed,
    # bot/intent_net.py) and the kernel killed it on a 24 GiB machine. A full collection and handing the free
    # pages back whenever the process has grown keep that from coming back.
    global _rss_after_cleanup
    if _ME.memory_info().rss - _rss_after_cleanup > _CLEANUP_AFTER_GROWTH:
        gc.collect()
        if _LIBC is not None:
            _LIBC.malloc_trim(0)
        _rss_after_cleanup = _ME.memory_info().rss


class LiveApp:
    """The running `supportbot start` process and the settings it was started with."""

    def __init__(self, process: subprocess.Popen, settings: Settings, log_path: Path) -> None:
        self.process = process
        self.settings = settings
        self.log_path = log_path
        self.url = f"http://{settings.host}:{settings.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def live_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    database = tmp_path_factory.mktemp("db") / "supportbot.db"
    env = {
        **os.environ,
        "SUPPORTBOT_DATA_DIR": str(TEST_DATA),
        "SUPPORTBOT_DATABASE_URL": f"sqlite:///{database}",
        "SUPPORTBOT_PORT": str(free_port()),
        "SUPPORTBOT_VLLM_PORT": str(free_port()),
        "SUPPORTBOT_SEED_ADAPTER_STEPS": str(TEST_ADAPTER_STEPS),
        "SUPPORTBOT_MAX_REPLY_TOKENS": "48",
        # Every test customer comes from this machine's address; tests/serving/test_limits.py tests the limit.
        "SUPPORTBOT_NEW_CONVERSATIONS_PER_MINUTE_ADDRESS": "100000",
        # Merged-model servers start without compiling their graph (minutes on a shared 2-core CPU); the
        # blue/green switching the tests check is the same either way.
        "SUPPORTBOT_VLLM_EXTRA_ARGS": "--enforce-eager",
    }
    settings = Settings(
        data_dir=TEST_DATA,
        database_url=env["SUPPORTBOT_DATABASE_URL"],
        port=int(env["SUPPORTBOT_PORT"]),
        vllm_port=int(env["SUPPORTBOT_VLLM_PORT"]),
        seed_adapter_steps=TEST_ADAPTER_STEPS,
        max_reply_tokens=48,
        new_conversations_per_minute_address=100_000,
    )
    log_path = tmp_path_factory.mktemp("logs") / "supportbot-start.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", "start"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    app = LiveApp(process, settings, log_path)
    try:
        wait_ready(app.url, process, log_path, path="/readyz", timeout_s=1200)
        yield app
    finally:
        # Also when the start failed or a test timeout interrupted it: no app and vLLM left running after the tests.
        stop_process(process)


@pytest.fixture(scope="session")
def client(live_app: LiveApp) -> Iterator[httpx.Client]:
    """An HTTP client for the live application."""
    with httpx.Client(base_url=live_app.url, timeout=120) as http:
        yield http


@pytest.fixture
def app_settings(live_app: LiveApp, tmp_path: Path) -> Settings:
    """Settings for an in-process app on a fresh database, sharing the live vLLM server."""
    return live_app.settings.model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'app.db'}", "vllm_url": live_app.settings.resolved_vllm_url}
    )


@pytest.fixture
def test_client(app_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings)) as http:
        yield http


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    """The prepared base model (converted once, then reused)."""
    from finetune.prepare import prepare_base_model

    return prepare_base_model(TEST_DATA / "models" / "smollm2-135m-instruct")


@pytest.fixture(scope="session")
def stand_in_vllm() -> Iterator[FakeVLLM]:
    """A stand-in model server speaking vLLM's endpoints (tests/utils/fake_vllm.py), for tests about the app's
    HTTP behaviour rather than its replies; it starts in milliseconds where the real one takes minutes."""
    replica = FakeVLLM("stand-in").start()
    yield replica
    replica.stop()


def stand_in_settings_at(folder: Path, vllm: FakeVLLM, base_model: Path, **overrides: object) -> Settings:
    """Settings for an app keeping its data in `folder` (a fresh SQLite database) in front of `vllm`."""
    return Settings(
        data_dir=folder,
        base_model=base_model,
        database_url=f"sqlite:///{folder / 'app.db'}",
        vllm_urls=[vllm.url],
        **{"new_conversations_per_minute_address": 100_000, **overrides},  # type: ignore[arg-type]
    )


@pytest.fixture
def stand_in_settings(stand_in_vllm: FakeVLLM, base_model_dir: Path, tmp_path: Path) -> Settings:
    """Settings for an in-process app on a fresh SQLite database in front of the stand-in model server."""
    return stand_in_settings_at(tmp_path, stand_in_vllm, base_model_dir)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL server, started the first time a test asks for it; each test makes its databases."""
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as error:
        pytest.fail(str(error))
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards."""
    name = postgres_server.create_database()
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Headless Chromium, one per test module; skipped where Chromium is not installed."""
    with chromium() as launched:
        yield launched
