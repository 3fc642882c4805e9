"""Runs vLLM's OpenAI-compatible server as a managed child process: start, wait, restart, stop.

The adapters to serve are asked for at every (re)start, so a restarted server serves the promoted ones.
"""

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from core.cpu_tuning import Tuning
from core.process import die_with_parent
from core.settings import Settings

logger = logging.getLogger(__name__)


class VLLMStartError(Exception):
    """vLLM exited or did not become healthy in time; the message carries the end of its log."""


@dataclass
class VLLMConfig:
    """How to launch one vLLM server."""

    model_dir: Path
    served_model_name: str
    host: str
    port: int
    log_path: Path
    max_model_len: int = 2048
    kvcache_gib: int = 2
    max_lora_rank: int = 16
    dtype: str = "auto"
    # Runtime LoRA: on for the server that evaluates candidates; off for a merged model, whose hot path runs no
    # LoRA kernels.
    enable_lora: bool = True
    # vLLM's VLLM_CPU_OMP_THREADS_BIND ("0-1": threads on both cores); None leaves vLLM's default.
    threads_bind: str | None = None
    # Requests sharing a prefix (the system text) reuse its KV cache instead of computing it again.
    prefix_caching: bool = True
    extra_args: list[str] = field(default_factory=list)
    start_timeout_s: float = 600.0
    # vLLM's development endpoints (/collective_rpc, /reset_prefix_cache): a merged server's weights are reloaded
    # in place through them at a promotion. They are only for the app: vLLM listens on `host` (127.0.0.1 by default).
    reloadable: bool = False


def vllm_config(
    settings: Settings,
    tuning: Tuning,
    *,
    model_dir: Path,
    served_model_name: str,
    port: int,
    log_path: Path,
    enable_lora: bool = True,
    kvcache_gib: int | None = None,
    gpu_memory_fraction: float | None = None,
    start_timeout_s: float | None = None,
    reloadable: bool = False,
) -> VLLMConfig:
    """How to launch a managed vLLM: the settings' limits (`kvcache_gib` overrides the KV-cache size), this
    machine's dtype and cores. On a GPU, `gpu_memory_fraction` is this server's share of the GPU's memory
    (several servers share one GPU during a switch); a --gpu-memory-utilization in the extra args wins."""
    extra = settings.vllm_extra_args.split()
    if tuning.threads_bind is None and gpu_memory_fraction is not None:
        extra = ["--gpu-memory-utilization", f"{gpu_memory_fraction:g}", *extra]
    return VLLMConfig(
        # Not resolved: vLLM keys its compile cache by this path, and a merged model is served through a link.
        model_dir=model_dir.absolute(),
        served_model_name=served_model_name,
        host=settings.vllm_host,
        port=port,
        log_path=log_path,
        max_model_len=settings.vllm_max_model_len,
        kvcache_gib=kvcache_gib or settings.vllm_kvcache_gib,
        max_lora_rank=settings.vllm_max_lora_rank,
        dtype=tuning.dtype,
        enable_lora=enable_lora,
        threads_bind=tuning.threads_bind,
        prefix_caching=settings.vllm_prefix_caching,
        extra_args=extra,
        start_timeout_s=start_timeout_s or settings.vllm_start_timeout_s,
        reloadable=reloadable,
    )


class VLLMServer:
    """One vLLM child process, restarted if it dies while it should be running."""

    def __init__(self, config: VLLMConfig, adapters: Callable[[], dict[str, Path]]) -> None:
        self.config = config
        self.adapters = adapters
        self.url = f"http://{config.host}:{config.port}"
        self.restarts = 0
        self._process: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def command(self) -> list[str]:
        config = self.config
        command = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(config.model_dir),
            "--served-model-name", config.served_model_name,
            "--host", config.host,
            "--port", str(config.port),
            "--max-model-len", str(config.max_model_len),
            "--dtype", config.dtype,
            "--enable-prefix-caching" if config.prefix_caching else "--no-enable-prefix-caching",
        ]  # fmt: skip
        if not config.enable_lora:
            return command + config.extra_args
        command += [
            "--enable-lora",
            "--max-lora-rank", str(config.max_lora_rank),
            # Two adapters at once: the promoted one and the one it replaces, while replies finish.
            "--max-loras", "2",
        ]  # fmt: skip
        adapters = self.adapters()
        if adapters:
            command += ["--lora-modules", *(f"{name}={path}" for name, path in adapters.items())]
        return command + config.extra_args

    def environment(self) -> dict[str, str]:
        env = {
            **os.environ,
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
            "VLLM_CPU_KVCACHE_SPACE": str(self.config.kvcache_gib),
        }
        if self.config.reloadable:
            env["VLLM_SERVER_DEV_MODE"] = "1"
        if self.config.threads_bind:
            env["VLLM_CPU_OMP_THREADS_BIND"] = self.config.threads_bind
            # On CPU, vLLM 0.32's ahead-of-time compile cache is written but fails to load under torch 2.13
            # ("'function' object has no attribute 'finalize_loading'"), so every start compiled the model again,
            # and a merged server started during a promotion compiled while the serving one held the cores.
            # Without it, torch's Inductor cache is reused: an idle start takes 37 s instead of 76-86 s, for
            # about 6 % slower decoding at 32 replies at once (tests/bench/README.md). An operator's value wins.
            env.setdefault("VLLM_USE_AOT_COMPILE", "0")
        return env

    def start(self, on_wait: Callable[[float], None] | None = None) -> None:
        """Launch vLLM, wait until it answers /health, and keep it alive until `stop`."""
        self._stopping.clear()
        self._spawn()
        self.wait_ready(on_wait)
        self.warm_up()
        self._watcher = threading.Thread(target=self._watch, name="vllm-watch", daemon=True)
        self._watcher.start()

    def _spawn(self) -> None:
        self.config.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.config.log_path.open("ab")
        logger.info("starting vLLM on %s (log: %s)", self.url, self.config.log_path)
        self._process = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.environment(),
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        log.close()

    def wait_ready(self, on_wait: Callable[[float], None] | None = None) -> None:
        started = time.monotonic()
        while True:
            elapsed = time.monotonic() - started
            if self._process is not None and self._process.poll() is not None:
                raise VLLMStartError(f"vLLM exited with code {self._process.returncode}:\n{self.log_tail()}")
            if self.healthy():
                logger.info("vLLM ready after %.0f s", elapsed)
                return
            if elapsed > self.config.start_timeout_s:
                self._terminate()
                raise VLLMStartError(f"vLLM not ready after {elapsed:.0f} s:\n{self.log_tail()}")
            if on_wait is not None:
                on_wait(elapsed)
            time.sleep(1)

    def warm_up(self) -> None:
        """Send one short request to every served model: the first request pays one-off setup costs."""
        try:
            models = httpx.get(f"{self.url}/v1/models", timeout=30).json()["data"]
            for model in models:
                httpx.post(
                    f"{self.url}/v1/chat/completions",
                    json={"model": model["id"], "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
                    timeout=120,
                )
        except (httpx.HTTPError, KeyError, ValueError) as error:
            logger.warning("vLLM warm-up failed: %s", error)

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.config.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _watch(self) -> None:
        backoff = 2.0
        while not self._stopping.wait(1.0):
            process = self._process
            if process is None or process.poll() is None:
                continue
            logger.error("vLLM exited with code %s; restarting in %.0f s", process.returncode, backoff)
            self._kill_group(process.pid)
            if self._stopping.wait(backoff):
                return
            try:
                self._spawn()
                self.wait_ready()
                self.restarts += 1
                backoff = 2.0
            except VLLMStartError as error:
                logger.error("vLLM restart failed: %s", error)
                backoff = min(backoff * 2, 60.0)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop vLLM and everything it started; no restart follows."""
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        self._terminate(timeout_s)

    def _terminate(self, timeout_s: float = 30.0) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    @staticmethod
    def _kill_group(group: int) -> None:
        # vLLM's engine processes share its process group; leftovers would hold memory and ports.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)

    def kill(self) -> None:
        """Kill vLLM abruptly, as a crash would; the watcher brings it back."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None
