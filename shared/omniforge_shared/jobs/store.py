"""Jobs, their metrics history and logs as rows in the registry database."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import select

from omniforge_shared.registry import Registry
from omniforge_shared.registry.db import Job, JobLog, JobMetric

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL = ("succeeded", "failed", "cancelled")


class JobNotFound(LookupError):
    pass


@dataclass(frozen=True)
class JobView:
    id: str
    recipe: str
    dataset: str
    model_name: str
    params: dict
    resources: dict
    state: str
    step: int
    max_steps: int
    progress: float
    eta_s: float | None
    metrics: dict
    result: dict
    error: str | None
    attempts: int
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, job: Job) -> "JobView":
        progress = round(100.0 * job.step / job.max_steps, 1) if job.max_steps else 0.0
        return cls(job.id, job.recipe, job.dataset, job.model_name, dict(job.params), dict(job.resources),
                   job.state, job.step, job.max_steps, progress, job.eta_s, dict(job.metrics or {}),
                   dict(job.result or {}), job.error, job.attempts, job.cancel_requested, job.created_at,
                   job.started_at, job.finished_at)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class JobStore:
    def __init__(self, registry: Registry) -> None:
        self.sessions = registry.sessions

    def create(self, *, recipe: str, dataset: str, params: dict, resources: dict, model_name: str,
               max_steps: int) -> JobView:
        job = Job(id=str(uuid.uuid4()), recipe=recipe, dataset=dataset, params=params, resources=resources,
                  model_name=model_name, state="queued", step=0, max_steps=max_steps, metrics={}, result={},
                  cancel_requested=False, attempts=0)
        with self.sessions.begin() as s:
            s.add(job)
        return self.get(job.id)

    def get(self, job_id: str) -> JobView:
        with self.sessions() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise JobNotFound(f"no training job {job_id!r}")
            return JobView.of(job)

    def list(self, *, state: str | None = None, limit: int = 100) -> list[JobView]:
        with self.sessions() as s:
            q = select(Job).order_by(Job.created_at.desc()).limit(limit)
            if state:
                q = q.where(Job.state == state)
            return [JobView.of(j) for j in s.scalars(q)]

    def update(self, job_id: str, **fields) -> JobView:
        with self.sessions.begin() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise JobNotFound(f"no training job {job_id!r}")
            for key, value in fields.items():
                setattr(job, key, value)
        return self.get(job_id)

    def start_attempt(self, job_id: str) -> JobView:
        with self.sessions.begin() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise JobNotFound(f"no training job {job_id!r}")
            job.attempts += 1
            job.state = "running"
            job.started_at = job.started_at or _now()
        return self.get(job_id)

    def finish(self, job_id: str, state: str, *, error: str | None = None, result: dict | None = None) -> JobView:
        assert state in FINAL
        fields = {"state": state, "finished_at": _now(), "eta_s": 0.0 if state == "succeeded" else None}
        if error is not None:
            fields["error"] = error
        if result is not None:
            fields["result"] = result
        return self.update(job_id, **fields)

    def request_cancel(self, job_id: str) -> JobView:
        """Queued jobs are cancelled at once; running ones stop within one step."""
        with self.sessions.begin() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise JobNotFound(f"no training job {job_id!r}")
            if job.state in FINAL:
                return JobView.of(job)
            job.cancel_requested = True
            if job.state == "queued":
                job.state, job.finished_at = "cancelled", _now()
        return self.get(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        with self.sessions() as s:
            return bool(s.scalar(select(Job.cancel_requested).where(Job.id == job_id)))

    def progress(self, job_id: str, *, step: int, eta_s: float | None, metrics: dict[str, float],
                 max_steps: int | None = None) -> None:
        """Records a step: the latest metrics on the job, and each metric's history."""
        with self.sessions.begin() as s:
            job = s.get(Job, job_id)
            job.step, job.eta_s = step, eta_s
            if max_steps is not None:
                job.max_steps = max_steps
            if metrics:
                job.metrics = {**(job.metrics or {}), **metrics}
                s.add_all(JobMetric(job_id=job_id, step=step, name=k, value=float(v)) for k, v in metrics.items())

    def truncate_metrics(self, job_id: str, *, after_step: int) -> None:
        """Drops history past a checkpoint a resumed attempt restarts from."""
        from sqlalchemy import delete

        with self.sessions.begin() as s:
            s.execute(delete(JobMetric).where(JobMetric.job_id == job_id, JobMetric.step > after_step))

    def metrics_history(self, job_id: str, name: str | None = None) -> list[tuple[int, str, float]]:
        with self.sessions() as s:
            q = select(JobMetric).where(JobMetric.job_id == job_id).order_by(JobMetric.id)
            if name:
                q = q.where(JobMetric.name == name)
            return [(m.step, m.name, m.value) for m in s.scalars(q)]

    def log(self, job_id: str, message: str, level: str = "info") -> None:
        with self.sessions.begin() as s:
            s.add(JobLog(job_id=job_id, level=level, message=message))

    def logs(self, job_id: str, *, after: int = 0) -> list[tuple[int, datetime, str, str]]:
        with self.sessions() as s:
            q = select(JobLog).where(JobLog.job_id == job_id, JobLog.id > after).order_by(JobLog.id)
            return [(r.id, r.created_at, r.level, r.message) for r in s.scalars(q)]


def requeue_stale(stale_after_s: float) -> list[tuple[str, str]]:
    """Running jobs whose worker has gone silent for stale_after_s: marked queued again and
    returned (id, queue) to be re-sent. They resume from their last checkpoint."""
    from datetime import timedelta

    from omniforge_shared.registry_settings import RegistrySettings
    from omniforge_shared.settings import load_settings

    registry = load_settings(RegistrySettings).open()
    cutoff = _now() - timedelta(seconds=stale_after_s)
    out = []
    try:
        with registry.sessions.begin() as s:
            for job in s.scalars(select(Job).where(Job.state == "running")):
                updated = job.updated_at if job.updated_at.tzinfo else job.updated_at.replace(tzinfo=timezone.utc)
                if updated < cutoff:
                    job.state = "queued"
                    out.append((job.id, (job.resources or {}).get("queue", "cpu")))
    finally:
        registry.close()
    return out
