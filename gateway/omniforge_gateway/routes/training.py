"""/training/jobs: submit, list, inspect, follow and cancel training jobs."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from omniforge_shared.data_root import OutsideDataRoot, resolve_in_data_root
from omniforge_shared.jobs.specs import RECIPE_SPECS, Resources, memory_problem
from omniforge_shared.jobs.store import JobNotFound, JobView

from ..errors import ApiError
from ..schemas import RequestModel

router = APIRouter(prefix="/training", tags=["training"])


class JobCreate(RequestModel):
    recipe: str = Field(description=f"one of {sorted(RECIPE_SPECS)}")
    dataset: str = Field(description="a registered dataset name (name or name:version), or a path inside "
                                     "the data root (OMNIFORGE_DATA_ROOT); upload files with POST /datasets")
    model_name: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$",
                                   description="registry name of the result; default: <dataset>-<recipe>")
    params: dict = Field(default_factory=dict, description="the recipe's hyper-parameters")
    resources: Resources = Field(default_factory=Resources)


class JobPublic(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    id: str
    recipe: str
    dataset: str
    model_name: str
    state: str
    step: int
    max_steps: int
    progress: float
    eta_s: float | None
    metrics: dict
    result: dict
    error: str | None
    attempts: int
    params: dict
    resources: dict
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, job: JobView) -> "JobPublic":
        return cls(**{k: getattr(job, k) for k in cls.model_fields})


def _jobs(request: Request):
    return request.app.state.jobs


def _check_dataset(request: Request, dataset: str) -> str:
    """A registered dataset's name, or a path inside the data root; returns the name part."""
    name, _, version = dataset.partition(":")
    known = {d.name for d in request.app.state.registry.list_datasets()}
    if name in known:
        return name
    root = request.app.state.data_root
    try:
        resolve_in_data_root(dataset, root)
    except (FileNotFoundError, OutsideDataRoot) as e:
        raise _unprocessable(f"unknown dataset {dataset!r}; registered datasets: {sorted(known)}, "
                             f"or a path inside the data root: {e}") from None
    return dataset


def _unprocessable(message: str) -> ApiError:
    return ApiError(422, "invalid_request", message)


@router.post("/jobs", status_code=202, response_model=JobPublic)
async def create_job(body: JobCreate, request: Request) -> JobPublic:
    jobs = _jobs(request)
    spec = RECIPE_SPECS.get(body.recipe)
    if spec is None:
        raise _unprocessable(f"unknown recipe {body.recipe!r}; available: {sorted(RECIPE_SPECS)}")
    try:
        params = spec.params.model_validate(body.params)
    except ValidationError as e:
        problems = "; ".join(f"params.{'.'.join(map(str, err['loc'])) or '(all)'}: {err['msg']}" for err in e.errors())
        raise _unprocessable(problems) from None
    queue = body.resources.queue
    too_big = memory_problem(params, jobs.settings.worker_memory_bytes(queue),
                             where=f"a {queue} worker may use (OMNIFORGE_TRAINING_{queue.upper()}_WORKER_MEMORY_GB)")
    if too_big:
        raise _unprocessable(too_big)
    name = _check_dataset(request, body.dataset)
    model_name = body.model_name or f"{Path(name).stem}-{body.recipe}".lower()
    return enqueue_job(request, recipe=body.recipe, dataset=body.dataset, model_name=model_name,
                       params=params.model_dump(), queue=queue, max_steps=getattr(params, "max_iters", 0))


def enqueue_job(request: Request, *, recipe: str, dataset: str, model_name: str, params: dict, queue: str,
                max_steps: int) -> JobPublic:
    """Records the job, then queues it; a broker that is down fails the job (never left queued)."""
    jobs = _jobs(request)
    job = jobs.store.create(recipe=recipe, dataset=dataset, params=params, resources={"queue": queue},
                            model_name=model_name, max_steps=max_steps)
    try:
        jobs.enqueue(job.id, queue)
    except Exception as e:
        jobs.store.finish(job.id, "failed", error=f"could not queue the job: {e}")
        raise ApiError(503, "service_unavailable", f"the job queue is unavailable ({e}); retry shortly",
                       {"Retry-After": "5"}) from None
    return JobPublic.of(job)


@router.get("/jobs", response_model=list[JobPublic])
async def list_jobs(request: Request, state: str | None = None,
                    limit: int = Query(100, ge=1, le=1000)) -> list[JobPublic]:
    return [JobPublic.of(j) for j in _jobs(request).store.list(state=state, limit=limit)]


def _get(request: Request, job_id: str) -> JobView:
    try:
        return _jobs(request).store.get(job_id)
    except JobNotFound as e:
        raise ApiError(404, "job_not_found", str(e)) from None


@router.get("/jobs/{job_id}", response_model=JobPublic)
async def get_job(job_id: str, request: Request) -> JobPublic:
    return JobPublic.of(_get(request, job_id))


@router.get("/jobs/{job_id}/logs")
async def job_logs(job_id: str, request: Request, after: int = Query(0, ge=0)) -> dict:
    _get(request, job_id)
    lines = _jobs(request).store.logs(job_id, after=after)
    return {"lines": [{"id": i, "time": t.isoformat(), "level": lvl, "message": m} for i, t, lvl, m in lines]}


@router.get("/jobs/{job_id}/metrics")
async def job_metrics(job_id: str, request: Request, name: str | None = None) -> dict:
    _get(request, job_id)
    history = _jobs(request).store.metrics_history(job_id, name)
    return {"history": [{"step": s, "name": n, "value": v} for s, n, v in history]}


@router.post("/jobs/{job_id}/cancel", response_model=JobPublic)
async def cancel_job(job_id: str, request: Request) -> JobPublic:
    _get(request, job_id)
    return JobPublic.of(_jobs(request).store.request_cancel(job_id))
