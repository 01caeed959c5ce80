"""`omniforge up | down | status`: the local stack."""
from __future__ import annotations

import signal
import time

import typer

from . import processes
from .context import console, fail


def up(detach: bool = typer.Option(False, "--detach", "-d", help="return once /readyz is green"),
       timeout: float = typer.Option(180.0, help="seconds to wait for readiness")):
    """Start the whole local stack (text service, gateway, training worker)."""
    running = [p for p in processes.recorded() if p.alive()]
    if running:
        fail(f"already running: {', '.join(f'{p.name} (pid {p.pid})' for p in running)}; "
             "run `omniforge down` first")
    try:
        procs = processes.start(detach=detach)
        body = processes.wait_ready(procs, timeout)
    except RuntimeError as e:
        processes.stop()   # what this call started, nothing else
        fail(str(e))
    console.print(f"[green]ready[/green] at {processes.gateway_url()}  "
                  + ", ".join(f"{k}: {v['status']}" for k, v in body["services"].items()))
    console.print(f"logs and pids in {processes.run_dir()}")
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
    processes.stop()
    if dead and not stopping:
        fail(f"{', '.join(dead)} exited; see logs in {processes.run_dir()}")


def down():
    """Stop the local stack started by `omniforge up`."""
    stopped = processes.stop()
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


def status():
    """Processes of the local stack and the gateway's readiness."""
    procs = processes.recorded()
    for p in procs:
        console.print(f"{p.name:8s} pid {p.pid:<7d} {'running' if p.alive() else '[red]gone[/red]'}  log {p.log}")
    ok, body = processes.readiness()
    console.print_json(data=body)
    raise typer.Exit(0 if ok else 1)


def register(app: typer.Typer) -> None:
    for command in (up, down, status):
        app.command()(command)
