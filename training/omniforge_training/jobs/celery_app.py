"""The Celery app. Broker and result backend come from OMNIFORGE_TRAINING_* settings:
Redis in production (`redis://host:6379/0`), and by default an embedded SQLAlchemy transport
on SQLite that needs no server. The task is a thin wrapper around `pipeline.run_job`.
"""
from __future__ import annotations

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


def make_celery(settings: TrainingSettings | None = None) -> Celery:
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
    if settings.broker_url.startswith(("redis://", "rediss://")):
        app.conf.broker_transport_options = {"visibility_timeout": settings.visibility_timeout_s}

    if not settings.broker_url.startswith(("redis://", "rediss://")):
        from celery.signals import worker_ready

        @worker_ready.connect(weak=False)
        def _requeue_orphans(sender=None, **_):
            from .store import requeue_stale

            for job_id, queue in requeue_stale(settings.stale_after_s):
                app.send_task(TASK_NAME, args=[job_id], queue=queue)

    @app.task(name=TASK_NAME, bind=True)
    def train(self, job_id: str) -> dict:
        from .pipeline import run_job   # torch is imported by workers only

        return run_job(job_id)

    return app


def enqueue(app: Celery, job_id: str, queue: str) -> None:
    app.send_task(TASK_NAME, args=[job_id], queue=queue)
