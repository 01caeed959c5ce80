"""The job queue: a Celery app configured from OMNIFORGE_TRAINING_* settings.

Redis in production (`redis://host:6379/0`); by default an embedded SQLAlchemy transport on
SQLite that needs no server. Jobs are sent by task name, so a submitter needs neither the
training code nor torch; training workers register the task itself under TASK_NAME.
"""
from __future__ import annotations

import os
from pathlib import Path

from celery import Celery
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from omniforge_shared.settings import load_settings, omniforge_home

TASK_NAME = "omniforge.train"
QUEUES = ("cpu", "gpu")


def _home_url(scheme: str, name: str) -> str:
    path: Path = omniforge_home() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"{scheme}:///{path}"


class TrainingSettings(BaseSettings):
    """Job queue settings, from OMNIFORGE_TRAINING_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="OMNIFORGE_TRAINING_")

    broker_url: str = Field(default_factory=lambda: _home_url("sqla+sqlite", "broker.db"))
    result_backend: str = Field(default_factory=lambda: _home_url("db+sqlite", "celery-results.db"))
    visibility_timeout_s: int = Field(60, ge=1)   # Redis: unacked jobs of a lost worker come back after this
    # brokers without a visibility timeout (the embedded SQLite one): a starting worker re-queues
    # running jobs whose last progress report is older than this
    stale_after_s: float = Field(120.0, gt=0)
    # the memory one job may use on a worker of each queue; jobs estimated above it are refused
    # at submission (0 = this machine's physical memory, for the cpu queue)
    cpu_worker_memory_gb: float = Field(0.0, ge=0)
    gpu_worker_memory_gb: float = Field(80.0, ge=0)

    @property
    def redis_broker(self) -> bool:
        return self.broker_url.startswith(("redis://", "rediss://"))

    def worker_memory_bytes(self, queue: str) -> int:
        gb = self.gpu_worker_memory_gb if queue == "gpu" else self.cpu_worker_memory_gb
        return int(gb * 2**30) if gb else physical_memory_bytes()


def physical_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def make_celery(settings: TrainingSettings | None = None) -> Celery:
    """The app jobs are sent through; a worker adds the task to it (omniforge_training.jobs)."""
    settings = settings or load_settings(TrainingSettings)
    app = Celery("omniforge", broker=settings.broker_url, backend=settings.result_backend)
    app.conf.update(
        task_acks_late=True,                 # a job is acknowledged only once it has finished
        task_reject_on_worker_lost=True,     # ... and re-delivered if its worker dies
        worker_prefetch_multiplier=1,
        task_default_queue="cpu",
        task_track_started=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    if settings.redis_broker:
        app.conf.broker_transport_options = {"visibility_timeout": settings.visibility_timeout_s}
    return app


def enqueue(app: Celery, job_id: str, queue: str) -> None:
    app.send_task(TASK_NAME, args=[job_id], queue=queue)
