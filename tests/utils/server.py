"""The app behind a real uvicorn server in a thread, configured as `supportbot start` configures it."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from core.settings import Settings
from serving.app import create_app
from serving.bounds import server_config
from tests.utils.ports import free_port


@contextmanager
def running_app(settings: Settings) -> Iterator[str]:
    """Start the app on a free local port with `server_config`; yields its base URL, stops it afterwards."""
    settings = settings.model_copy(update={"host": "127.0.0.1", "port": free_port()})
    server = uvicorn.Server(server_config(create_app(settings), settings, log_level="warning"))
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
