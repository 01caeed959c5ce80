"""Training jobs on real Celery workers (processes) with the real Redis broker."""
import os
from pathlib import Path
import signal
import time

import pytest

from support import build_hamlet_dataset, redis_answers, start_worker, stop_worker, wait_for

REDIS_URL = "redis://127.0.0.1:6379/15"
TINY = dict(tokenizer="bpe", vocab_size=512, n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=4,
            eval_interval=50, checkpoint_interval=20, threads=1, int8=False)


pytestmark = pytest.mark.skipif(not redis_answers(REDIS_URL), reason="Redis does not answer on 127.0.0.1:6379")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A fresh OMNIFORGE_HOME with a registered dataset, and a Redis broker database to itself."""
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    home = tmp_path_factory.mktemp("jobs-home")
    env = {"OMNIFORGE_HOME": str(home), "OMNIFORGE_TRAINING_BROKER_URL": REDIS_URL,
           "OMNIFORGE_TRAINING_RESULT_BACKEND": REDIS_URL, "OMNIFORGE_TRAINING_VISIBILITY_TIMEOUT_S": "3"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from omniforge_shared.registry_settings import RegistrySettings

    registry = RegistrySettings().open()
    registry.register_dataset(build_hamlet_dataset(home, chars=150_000), name="hamlet")
    yield env, registry
    registry.close()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def submit(registry, model_name, dataset="hamlet", **params):
    from omniforge_training.jobs.celery_app import enqueue, make_celery
    from omniforge_shared.jobs.store import JobStore

    store = JobStore(registry)
    job = store.create(recipe="text-lm", dataset=dataset, params={**TINY, **params}, resources={"queue": "cpu"},
                       model_name=model_name, max_steps=params.get("max_iters", 0))
    enqueue(make_celery(), job.id, "cpu")
    return store, job.id


def test_a_killed_worker_job_resumes_from_its_checkpoint_and_registers_once(env, tmp_path):
    env, registry = env
    log = tmp_path / "worker.log"
    worker = start_worker(env, log)
    try:
        store, job_id = submit(registry, "resumed", max_iters=400)
        wait_for(lambda: store.get(job_id).step >= 70, timeout=120, what="job past its third checkpoint")
        stop_worker(worker, signal.SIGKILL)                      # no warm shutdown, no ack
        killed_at = store.get(job_id).step
        worker = start_worker(env, log)
        wait_for(lambda: store.get(job_id).state == "succeeded", timeout=240, what="resumed job to finish")
    finally:
        stop_worker(worker)
    job = store.get(job_id)
    assert job.attempts == 2
    resumes = [m for _, _, _, m in store.logs(job_id) if m.startswith("resuming from the checkpoint at step")]
    assert len(resumes) == 1
    resumed_from = int(resumes[0].rsplit(" ", 1)[1])
    # the last checkpoint before the kill: progress reports are throttled (twice a second), so the
    # reported step may trail the step the worker had reached by up to a checkpoint or two
    assert resumed_from > 0 and resumed_from % TINY["checkpoint_interval"] == 0
    assert resumed_from >= killed_at - TINY["checkpoint_interval"]
    # the loss curve continues: one point per step, increasing, ending at the last step
    steps = [s for s, _, _ in store.metrics_history(job_id, "loss")]
    assert steps == sorted(set(steps)) and steps[-1] == 400
    assert [v.version for v in registry.list_versions("resumed")] == ["1"]
    assert registry.bundle("resumed", "1").manifest["job_id"] == job_id


def test_cancel_stops_within_a_step_and_registers_nothing(env, tmp_path):
    env, registry = env
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        store, job_id = submit(registry, "cancelled", max_iters=100_000)
        wait_for(lambda: store.get(job_id).step >= 5, timeout=120, what="job running")
        store.request_cancel(job_id)
        t = time.time()
        wait_for(lambda: store.get(job_id).state == "cancelled", timeout=30, what="cancellation")
        assert time.time() - t < 10
    finally:
        stop_worker(worker)
    assert registry.list_versions("cancelled") == []
    assert store.get(job_id).step < 100_000


def test_a_corrupt_or_missing_dataset_fails_the_job_clearly(env, tmp_path):
    import shutil

    env, registry = env
    data_root = Path(env["OMNIFORGE_HOME"]) / "data"       # jobs may name paths inside it only
    corrupt = data_root / "corrupt"
    shutil.copytree(registry.dataset_path("hamlet"), corrupt)
    with open(corrupt / "val.bin", "r+b") as f:
        f.write(b"\x00\x00\x00\x00")
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        store, bad = submit(registry, "corrupt", dataset=str(corrupt), max_iters=10)
        _, missing = submit(registry, "missing", dataset=str(data_root / "nothing-here"), max_iters=10)
        wait_for(lambda: store.get(bad).state == "failed" and store.get(missing).state == "failed", timeout=60,
                 what="jobs to fail")
    finally:
        stop_worker(worker)
    assert "do not match the content hash" in store.get(bad).error
    assert "neither a registered dataset nor a path" in store.get(missing).error
    assert registry.list_versions("corrupt") == [] and registry.list_versions("missing") == []


def test_recipes_run_without_celery(env, tmp_path):
    from omniforge_training.jobs.recipes import JobContext, run_recipe

    _, registry = env
    reports = []
    result = run_recipe("text-lm", JobContext(work_dir=tmp_path, dataset=registry.dataset_path("hamlet"),
                                              params={**TINY, "max_iters": 20},
                                              report=lambda *a: reports.append(a), log=lambda m: None))
    assert not result.stopped and result.summary["iters"] == 20
    assert reports[-1][0] == 20 and (tmp_path / "run" / "model.safetensors").exists()
