"""The app behind a real uvicorn server: in a thread, configured as `supportbot start` configures it, or as a
`supportbot start` process of its own."""

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from cli.training import plan_preview
from core.settings import Settings
from serving.app import create_app
from serving.bounds import server_config
from tests.utils.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def running_app(settings: Settings) -> Iterator[str]:
    """Start the app on a free local port with `server_config`; yields its base URL, stops it afterwards."""
    settings = settings.model_copy(update={"host": "127.0.0.1", "port": free_port()})
    server = uvicorn.Server(server_config(create_app(settings, planner=plan_preview), settings, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 300  # building the services loads models; slow on a busy machine
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the app stopped while starting (see the log above)")
        if time.monotonic() > deadline:
            raise RuntimeError("the app did not start in time")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def start_process(env: dict[str, str], log: Path) -> subprocess.Popen:
    """`supportbot start --skip-prepare` run from the checkout with `env`, its output appended to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "cli", "start", "--skip-prepare"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip


def stop_process(process: subprocess.Popen, timeout_s: float = 120) -> None:
    """Stop a `supportbot start` process as Ctrl+C does (it stops its vLLM servers too), killed if it has not exited
    after `timeout_s`; nothing when it has already exited."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_ready(url: str, process: subprocess.Popen, log: Path, path: str = "/healthz", timeout_s: float = 300) -> None:
    """Until `url` + `path` answers 200; fails the test with the log's end if the process exits, or kills it and
    fails if time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the app exited with {process.returncode}:\n{log.read_text(errors='replace')[-4000:]}")
        try:
            if httpx.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    pytest.fail(f"the app did not become ready:\n{log.read_text(errors='replace')[-4000:]}")
