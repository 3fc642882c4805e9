"""The demo shop's order API served for real by uvicorn in a thread, and a misbehaving one (500s, slowness, junk)."""

import asyncio
import threading
import time

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse

from serving.demo_shop import create_demo_shop, seeded_orders
from tests.utils.ports import free_port

KEY = "test-shop-key"
ORDERS = seeded_orders()


class Served:
    """An ASGI app on a free loopback port, in a thread, until the `with` block ends."""

    def __init__(self, app: FastAPI, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Open event streams would hold the shutdown up otherwise.
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "Served":
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def faulty_shop() -> FastAPI:
    """Routes that fail the way real order systems do, each counting its calls: /{fault}/orders/{number}."""
    app = FastAPI()
    app.state.calls = {}

    @app.get("/{fault}/orders/{number}")
    async def order(fault: str, number: str):
        app.state.calls[fault] = app.state.calls.get(fault, 0) + 1
        if fault == "error":
            return JSONResponse({"detail": "database down"}, status_code=500)
        if fault == "flaky" and app.state.calls[fault] == 1:
            return JSONResponse({"detail": "try again"}, status_code=503)
        if fault == "slow":
            await asyncio.sleep(5)
        if fault == "html":
            return PlainTextResponse("<html>maintenance</html>")
        if fault == "forbidden":
            return JSONResponse({"detail": "bad key"}, status_code=403)
        if fault == "invented":
            # A status the pack has no template for: the bot must not pass it on as if it knew what it means.
            return {"order_number": number, "customer_email": "a@example.com", "status": "teleported"}
        return ORDERS[number.upper()].model_dump()

    return app


def demo_shop() -> FastAPI:
    """The real demo shop app, with its order API, mounted as `supportbot start` mounts it."""
    app = FastAPI()
    app.mount("/demo-shop", create_demo_shop(KEY))
    return app
