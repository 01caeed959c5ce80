"""The embedded broker (SQLAlchemy transport on SQLite, no server): a killed worker's job is
re-queued by the next worker and resumes from its checkpoint."""
import signal
import time

from support import build_hamlet_dataset, start_worker, stop_worker, wait_for

TINY = dict(tokenizer="bpe", vocab_size=512, n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=4,
            eval_interval=50, checkpoint_interval=20, threads=1, int8=False)


def test_a_killed_worker_job_comes_back_on_the_embedded_broker(tmp_path, monkeypatch):
    from omniforge_shared.registry_settings import RegistrySettings
    from omniforge_training.jobs.celery_app import enqueue, make_celery
    from omniforge_shared.jobs.store import JobStore

    env = {"OMNIFORGE_HOME": str(tmp_path), "OMNIFORGE_TRAINING_STALE_AFTER_S": "2"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("OMNIFORGE_TRAINING_BROKER_URL", "OMNIFORGE_TRAINING_RESULT_BACKEND", "OMNIFORGE_DATABASE_URL"):
        monkeypatch.delenv(k, raising=False)
    registry = RegistrySettings().open()
    registry.register_dataset(build_hamlet_dataset(tmp_path, chars=100_000), name="hamlet")
    store = JobStore(registry)
    job = store.create(recipe="text-lm", dataset="hamlet", params={**TINY, "max_iters": 300},
                       resources={"queue": "cpu"}, model_name="embedded", max_steps=300)
    enqueue(make_celery(), job.id, "cpu")
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        wait_for(lambda: store.get(job.id).step >= 50, timeout=120, what="job past a checkpoint")
        stop_worker(worker, signal.SIGKILL)
        time.sleep(2.5)                                   # let the job go stale
        worker = start_worker(env, tmp_path / "worker.log")
        wait_for(lambda: store.get(job.id).state == "succeeded", timeout=240, what="job to finish")
        assert store.get(job.id).attempts == 2
        assert [v.version for v in registry.list_versions("embedded")] == ["1"]
    finally:
        stop_worker(worker)
        registry.close()
