"""A stand-in vLLM replica for routing tests: the same HTTP endpoints, answers in microseconds, on a real port.

It speaks /health, /v1/models, /v1/load_lora_adapter and streaming /v1/chat/completions the way vLLM's
OpenAI server does (404 for a model it does not serve), records every request, and can be stopped and
started again on the same port to play a crashed and restarted replica (which forgets its adapters).
"""

import asyncio
import json
import threading
import time
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from tests.utils.ports import free_port


class FakeVLLM:
    """One replica serving `base` plus whatever adapters were loaded into it."""

    def __init__(self, name: str, base: str = "base", piece_delay_s: float = 0.0,
                 pieces: tuple[str, ...] | None = None, break_after: int | None = None) -> None:  # fmt: skip
        self.name = name
        self.base = base
        # The reply's pieces (default: "Answer from <name>."), and after how many of them the connection
        # breaks off without an end, as when vLLM crashes mid-stream (None: never).
        self.pieces = pieces or ("Answer from ", name, ".")
        self.break_after = break_after
        # Seconds before each piece of a reply: a slow model, for load tests of the app in front of it.
        self.piece_delay_s = piece_delay_s
        self.adapters: dict[str, str] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, model)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def chats(self, model: str | None = None) -> int:
        """Chat completions this replica answered (for `model`, or any)."""
        return sum(1 for path, asked in self.requests if path == "chat" and (model is None or asked == model))

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/health")
        def health() -> PlainTextResponse:
            return PlainTextResponse("")

        @app.get("/v1/models")
        def models() -> dict:
            self.requests.append(("models", None))
            return {"object": "list", "data": [{"id": name, "object": "model"} for name in self.served()]}

        @app.post("/v1/load_lora_adapter")
        async def load(request: Request) -> PlainTextResponse:
            body = await request.json()
            self.requests.append(("load", body["lora_name"]))
            if body["lora_name"] in self.adapters:
                return PlainTextResponse(f"The lora adapter '{body['lora_name']}' has already been loaded.", 400)
            if not Path(body["lora_path"]).is_dir():
                return PlainTextResponse(f"No adapter found at {body['lora_path']}", 404)
            self.adapters[body["lora_name"]] = body["lora_path"]
            return PlainTextResponse(f"Success: LoRA adapter '{body['lora_name']}' added successfully.")

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            model = body["model"]
            if model not in self.served():
                error = {"message": f"The model `{model}` does not exist.", "type": "NotFoundError", "code": 404}
                return JSONResponse({"error": error}, 404)
            self.requests.append(("chat", model))
            if not body.get("stream"):
                # A whole reply at once, as vLLM answers without `stream` (the evaluation of retraining asks so).
                message = {"role": "assistant", "content": "".join(self.pieces)}
                return {
                    "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
                }  # fmt: skip
            return StreamingResponse(self._stream(model), media_type="text/event-stream")

        return app

    def served(self) -> list[str]:
        return [self.base, *self.adapters]

    async def _stream(self, model: str):
        def chunk(**fields: object) -> str:
            payload = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model}
            return f"data: {json.dumps({**payload, **fields})}\n\n"

        yield chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        for number, piece in enumerate(self.pieces):
            if self.break_after is not None and number >= self.break_after:
                raise ConnectionAbortedError("the stand-in model server broke off mid-reply")
            if self.piece_delay_s:
                await asyncio.sleep(self.piece_delay_s)
            yield chunk(choices=[{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
        yield chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}])
        yield chunk(choices=[], usage={"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14})
        yield "data: [DONE]\n\n"

    def start(self) -> "FakeVLLM":
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError(f"fake vLLM {self.name} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop answering, as a crashed replica does; a later `start` comes back without adapters."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = None
        self.adapters.clear()
