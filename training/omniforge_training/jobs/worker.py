"""A training worker: `omniforge worker --queues cpu` (or `python -m omniforge_training.jobs.worker`).

It exports Prometheus metrics on OMNIFORGE_WORKER_METRICS_PORT (default 9102): the jobs in
each state and the step rate of each running job, read from the job store at scrape time.
"""
from __future__ import annotations

import logging
import os
import socket

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from omniforge_shared.jobs.queue import QUEUES
from omniforge_shared.jobs.store import STATES, JobStore
from omniforge_shared.logs import setup_logging
from omniforge_shared.metrics import Metrics
from omniforge_shared.registry_settings import RegistrySettings
from omniforge_shared.settings import load_settings

from .celery_app import make_celery

logger = logging.getLogger("omniforge.worker")


class WorkerSettings(BaseSettings):
    """Worker settings, from OMNIFORGE_WORKER_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="OMNIFORGE_WORKER_")

    queues: str = "cpu"                                # comma-separated: cpu, gpu
    concurrency: int = Field(1, ge=1, le=64)           # jobs at once
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9102, ge=0, le=65535)


class JobCollector:
    """omniforge_worker_jobs{state} and omniforge_worker_step_rate_steps_per_second{job_id, model} (not `job`:
    Prometheus gives that label to the scrape job)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.registry = None

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        if self.registry is None:
            self.registry = load_settings(RegistrySettings).open()
        store = JobStore(self.registry)
        jobs = GaugeMetricFamily(self.metrics.name("jobs"), "training jobs by state (the latest 1000)",
                                 labels=["state"])
        rate = GaugeMetricFamily(self.metrics.name("step_rate_steps_per_second"), "steps a second of running jobs",
                                 labels=["job_id", "model"])
        recent = store.list(limit=1000)
        for state in STATES:
            jobs.add_metric([state], sum(j.state == state for j in recent))
        for job in recent:
            if job.state == "running" and "steps_per_s" in job.metrics:
                rate.add_metric([job.id, job.model_name], job.metrics["steps_per_s"])
        yield jobs
        yield rate

    def describe(self):
        return []


def run_worker(*, queues: str | None = None, concurrency: int | None = None, loglevel: str = "INFO") -> None:
    """Flags given here win over OMNIFORGE_WORKER_* settings."""
    settings = load_settings(WorkerSettings)
    queues, concurrency = queues or settings.queues, concurrency or settings.concurrency
    unknown = [q for q in queues.split(",") if q not in QUEUES]
    if unknown:
        raise SystemExit(f"unknown queue(s) {unknown}; use a comma-separated list of {list(QUEUES)}")
    setup_logging("worker", level=getattr(logging, loglevel))
    metrics = Metrics("worker")
    metrics.registry.register(JobCollector(metrics))
    metrics.serve(settings.metrics_host, settings.metrics_port)
    app = make_celery()
    app.worker_main(["worker", "-Q", queues, "-c", str(concurrency), "--loglevel", loglevel,
                     "-n", f"omniforge-{queues.replace(',', '-')}-{os.getpid()}@{socket.gethostname()}",
                     "--without-gossip", "--without-mingle"])


def main() -> None:
    run_worker()


if __name__ == "__main__":
    main()
