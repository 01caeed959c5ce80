"""The worker's side of the job queue: the shared Celery app (omniforge_shared.jobs.queue)
with the training task registered on it. The task is a thin wrapper around `pipeline.run_job`.
"""
from __future__ import annotations

from celery import Celery

from omniforge_shared.jobs import queue
from omniforge_shared.jobs.queue import QUEUES, TASK_NAME, TrainingSettings, enqueue
from omniforge_shared.settings import load_settings

__all__ = ["QUEUES", "TASK_NAME", "enqueue", "make_celery"]


def make_celery(settings: TrainingSettings | None = None) -> Celery:
    settings = settings or load_settings(TrainingSettings)
    app = queue.make_celery(settings)

    if not settings.redis_broker:
        from celery.signals import worker_ready

        @worker_ready.connect(weak=False)
        def _requeue_orphans(sender=None, **_):
            from omniforge_shared.jobs.store import requeue_stale

            for job_id, queue_name in requeue_stale(settings.stale_after_s):
                app.send_task(TASK_NAME, args=[job_id], queue=queue_name)

    @app.task(name=TASK_NAME, bind=True)
    def train(self, job_id: str) -> dict:
        from .pipeline import run_job   # torch is imported by workers only

        return run_job(job_id)

    return app
