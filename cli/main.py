"""The `supportbot` command: prepare the models, start the whole application, and the admin tasks.

Each subcommand is a plain typed function; long work shows a progress bar.
"""

import contextlib
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cli import ops as cli_ops
from cli import training as cli_training
from cli.intents import intents_app
from cli.kb import kb_app
from cli.pack import pack_app
from cli.progress import training_progress
from cli.staff import staff_app
from cli.store import store_app
from core.settings import Settings, get_settings
from serving.logging import configure_logging, uvicorn_log_config

app = typer.Typer(help="supportbot: a self-hosted customer-service chatbot.", no_args_is_help=True)
console = Console()
app.add_typer(staff_app, name="staff")
app.add_typer(store_app, name="store")
app.add_typer(kb_app, name="kb")
app.add_typer(pack_app, name="pack")


def _configure_logging(verbose: bool) -> None:
    # Text locally, one JSON object per line in production (SUPPORTBOT_LOG_FORMAT overrides).
    configure_logging(get_settings().resolved_log_format, verbose=verbose)


def prepare_models(settings: Settings, steps: int | None = None) -> None:
    """Convert the base model (once) and train the first domain adapter (once)."""
    from finetune.prepare import prepare_base_model
    from finetune.seed import ensure_seed_adapter, training_pack
    from finetune.sft import LoraRecipe
    from runtime.registry import AdapterRegistry

    if settings.base_model is None:
        with console.status("Preparing the base model (SmolLM2-135M-Instruct, GGUF -> safetensors)..."):
            prepare_base_model(settings.base_model_dir)
    elif not (settings.base_model / "config.json").exists():
        raise typer.BadParameter(f"{settings.base_model} is not a Hugging Face model directory")
    console.print(f"[green]Base model ready[/] in {settings.base_model_dir}")

    registry = AdapterRegistry(settings.adapters_dir)
    recipe = LoraRecipe(
        max_steps=steps or settings.seed_adapter_steps,
        max_minutes=settings.seed_adapter_max_minutes,
        rank=min(16, settings.vllm_max_lora_rank),
    )
    pack = training_pack(settings)
    if registry.active() is None and not pack.seed_conversations():
        console.print(
            "No seed conversations in the pack (or SUPPORTBOT_PACK_SEEDS=none): the base model answers until a "
            "retraining on your reviewed conversations (`supportbot train`) promotes an adapter"
        )
    elif registry.active() is None:
        with training_progress("Training the first domain adapter", console) as progress:
            task = progress.add_task("train", total=recipe.max_steps, loss="-")

            def on_step(step: int, total: int, loss: float) -> None:
                progress.update(task, completed=step, loss=f"{loss:.3f}")

            result = ensure_seed_adapter(
                registry=registry,
                base_model_dir=settings.base_model_dir,
                pack=pack,
                recipe=recipe,
                on_step=on_step,
            )
        if result is not None:
            console.print(
                f"[green]Adapter trained[/]: {result.steps} steps on {result.examples} conversations in "
                f"{result.seconds:.0f} s, loss {result.first_loss:.3f} -> {result.last_loss:.3f}"
            )
    console.print(f"[green]Domain adapter in service[/]: {registry.active() or 'none (base model)'}")

    from cli.intents import train_pack_classifier
    from runtime.registry import classifier_registry

    classifiers = classifier_registry(settings.classifiers_dir)
    if classifiers.active() is None:
        train_pack_classifier(settings, console=console)
    console.print(f"[green]Intent classifier in service[/]: {classifiers.active()}")

    from cli.selection import train_answer_selector
    from runtime.registry import selector_registry

    selectors = selector_registry(settings.selectors_dir)
    if settings.answer_selection == "learned":
        if selectors.active() is None:
            # Before the app's first start the store has no articles yet: the pack's are what it will serve.
            train_answer_selector(settings, None, console)
        console.print(f"[green]Answer selector in service[/]: {selectors.active()}")


@app.command()
def prepare(
    steps: Annotated[int | None, typer.Option(help="Training steps for the first adapter.")] = None,
    verbose: bool = False,
) -> None:
    """Prepare the base model and the first domain adapter; skipped where already done."""
    _configure_logging(verbose)
    prepare_models(get_settings(), steps)


# On one GPU with merged serving: the runtime-LoRA server, and up to two merged servers during a switch.
LORA_SERVER_GPU_SHARE = 0.2


def vllm_server(settings: Settings, tuning):
    """The managed vLLM with runtime LoRA: the base model, the promoted adapter, candidates under evaluation."""
    from core.vllm_process import VLLMServer, vllm_config
    from runtime.registry import AdapterRegistry

    registry = AdapterRegistry(settings.adapters_dir)

    def adapters() -> dict[str, Path]:
        active = registry.active()
        return {active: registry.path(active).resolve()} if active else {}

    config = vllm_config(
        settings,
        tuning,
        model_dir=settings.base_model_dir,
        served_model_name=settings.served_model_name,
        port=settings.vllm_port,
        log_path=settings.logs_dir / "vllm.log",
        # With merged serving, customers' replies have a server of their own; this one holds evaluation, summaries
        # and the bridge during a switch, so half the KV cache does (memory for the second server).
        kvcache_gib=max(1, settings.vllm_kvcache_gib // 2) if settings.serve_merged else None,
        gpu_memory_fraction=LORA_SERVER_GPU_SHARE if settings.serve_merged else None,
    )
    return VLLMServer(config, adapters)


@app.command()
def start(
    skip_prepare: Annotated[bool, typer.Option(help="Do not check or prepare the models first.")] = False,
    verbose: bool = False,
) -> None:
    """Start the whole application: models prepared, vLLM managed as a child process, then the app."""
    import uvicorn

    from core.vllm_process import VLLMStartError
    from serving.app import create_app
    from serving.bounds import server_config

    _configure_logging(verbose)
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not skip_prepare:
        prepare_models(settings)

    server = tuning = None
    if settings.manages_vllm:
        from serving.services import vllm_tuning

        with console.status("Choosing vLLM's dtype and cores for this machine..."):
            tuning = vllm_tuning(settings)
        console.print(f"[green]vLLM runs[/] {tuning.dtype} on cores {tuning.threads_bind or 'auto'}: {tuning.reason}")
        server = vllm_server(settings, tuning)
        with console.status("Starting vLLM (about a minute on CPU)...") as status:
            try:
                server.start(on_wait=lambda elapsed: status.update(f"Starting vLLM... {elapsed:.0f} s"))
            except VLLMStartError as error:
                console.print(f"[red]vLLM did not start[/]: {error}")
                raise typer.Exit(1) from error
        console.print(f"[green]vLLM ready[/] at {server.url} (log: {server.config.log_path})")

    base = f"http://{settings.host}:{settings.port}"
    console.print(f"\n[bold]supportbot is starting at {base}[/]")
    if settings.mode == "local":
        console.print(f"  Widget demo:   {base}/demo")
    console.print(f"  Staff console: {base}/console  (first admin: supportbot staff create-admin)")
    if settings.mode == "local":
        console.print(f"  API docs:      {base}/docs")
    console.print(f"  Customer API:  {base}/api/conversations")
    console.print(f"  Health:        {base}/readyz")
    console.print("Press Ctrl-C to stop.\n")
    try:
        config = server_config(
            create_app(settings, tuning, planner=cli_training.plan_preview),
            settings,
            log_level="info",
            log_config=uvicorn_log_config(settings.resolved_log_format),
        )
        # uvicorn re-raises the Ctrl-C it handled once the server has stopped; as `uvicorn.run` does, a
        # stop asked for is a clean exit (status 0), not a KeyboardInterrupt.
        with contextlib.suppress(KeyboardInterrupt):
            uvicorn.Server(config).run()
    finally:
        if server is not None:
            with console.status("Stopping vLLM..."):
                server.stop()
        console.print("supportbot stopped.")


app.add_typer(intents_app, name="intents")
cli_training.register(app)
cli_ops.register(app)

if __name__ == "__main__":
    app()
