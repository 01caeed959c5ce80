"""`omniforge worker` and `omniforge train submit | status | logs | cancel | watch`: training
jobs, submitted and followed through the gateway."""
from __future__ import annotations

import json
import time
from typing import Optional

import typer
from rich.table import Table

from . import train
from .context import client, console, fail, sdk_call

SPARK = "▁▂▃▄▅▆▇█"


def worker(queues: str = typer.Option("cpu", help="comma-separated: cpu, gpu"),
           concurrency: int = typer.Option(1, help="jobs at once")):
    """Start a training worker for the given queues."""
    from omniforge_training.jobs.worker import run_worker

    run_worker(queues=queues, concurrency=concurrency)


@train.app.command("submit")
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
            fail(f"--param {item!r}: write KEY=VALUE, e.g. --param max_iters=500")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    job = sdk_call(client().training.jobs.create, recipe=recipe, dataset=dataset, params=params,
                   model_name=model_name, queue=queue)
    console.print(f"submitted job [bold]{job.id}[/bold] ({job.recipe} on {job.dataset} -> {job.model_name})")
    if watch:
        train_watch(job.id)


@train.app.command("status")
def train_status(job_id: Optional[str] = typer.Argument(None, help="default: list recent jobs")):
    """A job's state, step, progress, metrics and ETA (or a table of recent jobs)."""
    api = client()
    if job_id:
        job = sdk_call(api.training.jobs.retrieve, job_id)
        console.print_json(data={k: getattr(job, k) for k in ("id", "state", "step", "max_steps", "progress",
                                                               "eta_s", "metrics", "result", "error", "attempts")})
        return
    table = Table("id", "recipe", "model", "state", "progress", "loss", "created")
    for job in sdk_call(api.training.jobs.list):
        table.add_row(job.id[:8], job.recipe, job.model_name, job.state, f"{job.progress:.0f}%",
                      f"{job.metrics.get('loss', float('nan')):.3f}", job.created_at[:19])
    console.print(table)


@train.app.command("logs")
def train_logs(job_id: str, follow: bool = typer.Option(False, "--follow", "-f")):
    """A job's log lines."""
    api = client()
    after = 0
    while True:
        for line in sdk_call(api.training.jobs.logs, job_id, after=after):
            console.print(f"[dim]{line['time'][11:19]}[/dim] {line['message']}", highlight=False)
            after = line["id"]
        if not follow or sdk_call(api.training.jobs.retrieve, job_id).done:
            return
        time.sleep(1)


@train.app.command("cancel")
def train_cancel(job_id: str):
    """Cancel a job: a queued one at once, a running one within one step."""
    job = sdk_call(client().training.jobs.cancel, job_id)
    console.print(f"{job.id}: {job.state}{' (stopping at the next step)' if job.state == 'running' else ''}")


def sparkline(values: list[float], width: int = 60) -> str:
    values = values[-width:]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    return "".join(SPARK[int((v - lo) / span * (len(SPARK) - 1))] for v in values)


@train.app.command("watch")
def train_watch(job_id: str):
    """Follow a job: a progress bar and a live loss line, until it ends."""
    from rich.console import Group
    from rich.live import Live
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.text import Text

    api = client()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                        TextColumn("step {task.completed}/{task.total}"), TimeRemainingColumn())
    task = progress.add_task("queued", total=None)
    loss_line = Text("")
    with Live(Group(progress, loss_line), console=console, refresh_per_second=4):
        while True:
            job = sdk_call(api.training.jobs.retrieve, job_id)
            progress.update(task, description=job.state, total=job.max_steps or None, completed=job.step)
            losses = [m["value"] for m in sdk_call(api.training.jobs.metrics, job_id, name="loss")]
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
        fail(f"job {job.state}: {job.error or ''}")


def register(app: typer.Typer) -> None:
    app.command()(worker)
