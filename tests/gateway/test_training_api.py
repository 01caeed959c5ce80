"""/training/jobs and /datasets through the gateway, with a worker on the embedded (SQLite) broker."""
import json
import time

import httpx
import pytest

from support import Proc, build_hamlet_dataset, free_port, wait_for

PARAMS = dict(tokenizer="bpe", vocab_size=512, n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=4,
              eval_interval=20, checkpoint_interval=20, threads=1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from omniforge_shared.artifacts import LocalArtifactStore
    from omniforge_shared.registry import Registry
    home = tmp_path_factory.mktemp("api-home")
    registry = Registry(f"sqlite:///{home / 'registry.db'}", LocalArtifactStore(home / "artifacts"))
    registry.upgrade()
    registry.register_dataset(build_hamlet_dataset(home), name="hamlet")
    env = {"OMNIFORGE_HOME": str(home)}
    port, worker_metrics = free_port(), free_port()
    gateway = Proc("omniforge_gateway.app", {**env, "OMNIFORGE_GATEWAY_PORT": str(port),
                                             "OMNIFORGE_GATEWAY_TEXT_ADDRESS": f"127.0.0.1:{free_port()}",
                                             "OMNIFORGE_GATEWAY_FUSION_ADDRESS": "", "OMNIFORGE_GATEWAY_IMAGE_ADDRESS": "", "OMNIFORGE_GATEWAY_AUDIO_ADDRESS": "",
                                             "OMNIFORGE_GATEWAY_MAX_UPLOAD_MB": "1"},
                   home / "gw.log").start()
    worker = Proc("omniforge_training.jobs.worker", {**env, "OMNIFORGE_WORKER_METRICS_PORT": str(worker_metrics)},
                  home / "worker.log").start()
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{url}/healthz").status_code == 200, what="gateway up")
    client = httpx.Client(base_url=url, timeout=30)
    client.home, client.worker_metrics = home, f"http://127.0.0.1:{worker_metrics}/metrics"
    yield client, registry
    worker.stop()
    gateway.stop()
    registry.close()


def test_submit_watch_and_get_a_registered_model(stack):
    http, registry = stack
    t0 = time.time()
    r = http.post("/training/jobs", json={"recipe": "text-lm", "dataset": "hamlet", "model_name": "api-lm",
                                          "params": {**PARAMS, "max_iters": 60, "promote": True}})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] == "queued" and job["max_steps"] == 60
    seen_running = []

    def finished():
        j = http.get(f"/training/jobs/{job['id']}").json()
        if j["state"] == "running":
            seen_running.append(j)
        return j["state"] in ("succeeded", "failed")

    wait_for(finished, timeout=180, what="job to finish")
    elapsed = time.time() - t0
    j = http.get(f"/training/jobs/{job['id']}").json()
    assert j["state"] == "succeeded", j["error"]
    assert j["progress"] == 100.0 and j["step"] == 60 and "val_loss" in j["metrics"]
    assert j["result"]["promotion"] == {"promoted": True}
    assert registry.get("api-lm").stage == "production"
    bundle = registry.bundle("api-lm")
    assert bundle.has("model-card") and bundle.has("loss-curve") and bundle.has("model-int8")
    assert "int8_perplexity_change_pct" in bundle.manifest["metrics"]
    logs = [line["message"] for line in http.get(f"/training/jobs/{job['id']}/logs").json()["lines"]]
    assert any("onnx parity" in m for m in logs) and any("TensorRT engine skipped" in m for m in logs)
    history = http.get(f"/training/jobs/{job['id']}/metrics", params={"name": "val_loss"}).json()["history"]
    assert [h["step"] for h in history] == [20, 40, 60]
    assert any(j["eta_s"] is not None for j in seen_running)
    print(f"submit -> registered bundle: {elapsed:.1f}s")


@pytest.mark.parametrize("body, message", [
    ({"recipe": "gan", "dataset": "hamlet"}, "unknown recipe 'gan'; available: ['asr', 'audio-align', 'caption', 'clip', 'diffusion', 'text-lm', 'text-lora', 'tts', 'vocoder']"),
    ({"recipe": "text-lm", "dataset": "nope"}, "unknown dataset 'nope'; registered datasets: ['hamlet']"),
    ({"recipe": "text-lm", "dataset": "hamlet", "params": {"n_layer": 100}},
     "params.n_layer: Input should be less than or equal to 48"),
    ({"recipe": "text-lm", "dataset": "hamlet", "params": {"lr": -1}}, "params.lr: Input should be greater than 0"),
    ({"recipe": "text-lm", "dataset": "hamlet", "params": {"layers": 2}}, "params.layers: Extra inputs"),
    ({"recipe": "text-lm", "dataset": "hamlet", "params": {"n_embd": 30, "n_head": 4}}, "must be divisible"),
    ({"recipe": "text-lm", "dataset": "hamlet", "resources": {"queue": "tpu"}}, "resources.queue"),
])
def test_bad_jobs_get_422_with_what_is_allowed(stack, body, message):
    http, _ = stack
    r = http.post("/training/jobs", json=body)
    assert r.status_code == 422, r.text
    assert message in r.json()["error"]["message"]


def test_cancel_through_the_api(stack):
    http, registry = stack
    job = http.post("/training/jobs", json={"recipe": "text-lm", "dataset": "hamlet", "model_name": "api-cancel",
                                            "params": {**PARAMS, "max_iters": 100_000}}).json()
    wait_for(lambda: http.get(f"/training/jobs/{job['id']}").json()["step"] > 3, timeout=120, what="running")
    assert http.post(f"/training/jobs/{job['id']}/cancel").status_code == 200
    wait_for(lambda: http.get(f"/training/jobs/{job['id']}").json()["state"] == "cancelled", timeout=30,
             what="cancelled")
    assert registry.list_versions("api-cancel") == []
    assert http.get("/training/jobs/not-a-job").status_code == 404
    assert any(j["id"] == job["id"] for j in http.get("/training/jobs").json())


def test_sdk_training_jobs_sync_and_async(stack):
    import asyncio

    from omniforge_sdk import AsyncClient, BadRequestError, Client

    http, registry = stack
    url = str(http.base_url).rstrip("/")
    with Client(base_url=url) as client:
        job = client.training.jobs.create(recipe="text-lm", dataset="hamlet", model_name="sdk-lm",
                                          params={**PARAMS, "max_iters": 20})
        done = client.training.jobs.wait(job.id, timeout=180, poll_s=0.5)
        assert done.state == "succeeded" and done.result["version"] == "1"
        assert any("registered sdk-lm:1" in line["message"] for line in client.training.jobs.logs(job.id))
        with pytest.raises(BadRequestError, match="unknown recipe"):
            client.training.jobs.create(recipe="nope", dataset="hamlet")

    async def run():
        async with AsyncClient(base_url=url) as client:
            job = await client.training.jobs.create(recipe="text-lm", dataset="hamlet", model_name="sdk-async",
                                                    params={**PARAMS, "max_iters": 20})
            done = await client.training.jobs.wait(job.id, timeout=180, poll_s=0.5)
            assert done.state == "succeeded"
            assert [m["step"] for m in await client.training.jobs.metrics(job.id, name="val_loss")] == [20]

    asyncio.run(run())


def test_only_paths_inside_the_data_root_are_trained_on(stack, tmp_path):
    http, _ = stack
    root = http.home / "data"
    (root / "mine").mkdir(parents=True, exist_ok=True)
    (root / "mine" / "notes.txt").write_text("to be or not to be " * 200)
    outside = tmp_path / "secret.txt"
    outside.write_text("not for training")
    (root / "link.txt").unlink(missing_ok=True)
    (root / "link.txt").symlink_to(outside)
    for dataset in ("/etc/passwd", "../../../../etc/passwd", str(outside), "link.txt", "mine/../../x"):
        r = http.post("/training/jobs", json={"recipe": "text-lm", "dataset": dataset, "params": PARAMS})
        assert r.status_code == 422, (dataset, r.text)
        message = r.json()["error"]["message"]
        assert "outside the data root" in message or "does not exist in the data root" in message, message
    ok = http.post("/training/jobs", json={"recipe": "text-lm", "dataset": "mine/notes.txt", "model_name": "inside",
                                           "params": {**PARAMS, "tokenizer": "char", "max_iters": 100_000}})
    assert ok.status_code == 202, ok.text
    http.post(f"/training/jobs/{ok.json()['id']}/cancel")
    wait_for(lambda: http.get(f"/training/jobs/{ok.json()['id']}").json()["state"] in ("cancelled", "failed"),
             timeout=60, what="the job to stop")


def test_a_job_that_cannot_fit_the_worker_is_refused_with_the_estimate(stack):
    http, _ = stack
    params = {"n_layer": 48, "n_embd": 4096, "n_head": 32, "block_size": 4096, "batch_size": 1024}
    r = http.post("/training/jobs", json={"recipe": "text-lm", "dataset": "hamlet", "params": params})
    assert r.status_code == 422, r.text
    message = r.json()["error"]["message"]
    assert "this job needs about" in message and "TB of memory" in message
    assert "a cpu worker may use (OMNIFORGE_TRAINING_CPU_WORKER_MEMORY_GB)" in message and "GB" in message


def test_upload_a_file_and_it_becomes_a_registered_dataset(stack, corpus):
    http, registry = stack
    docs = "\n".join(json.dumps({"text": corpus.read_text()[i:i + 400]}) for i in range(0, 40_000, 400))
    r = http.post("/datasets", data={"name": "uploaded", "tokenizer": "char", "language": ""},
                  files={"file": ("hamlet.jsonl", docs.encode(), "application/x-ndjson")})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["bytes"] == len(docs.encode()) and body["job"]["recipe"] == "dataset-build"
    wait_for(lambda: http.get(f"/training/jobs/{body['job']['id']}").json()["state"] in ("succeeded", "failed"),
             timeout=120, what="the dataset build")
    job = http.get(f"/training/jobs/{body['job']['id']}").json()
    assert job["state"] == "succeeded", job["error"]
    listed = {d["name"]: d for d in http.get("/datasets").json()}
    assert listed["uploaded"]["counts"]["train_tokens"] > 0 and "hamlet" in listed
    # and it trains by name, as any registered dataset
    again = http.post("/training/jobs", json={"recipe": "text-lm", "dataset": "uploaded", "model_name": "from-upload",
                                              "params": {**PARAMS, "tokenizer": "char", "max_iters": 5}})
    assert again.status_code == 202, again.text


@pytest.mark.parametrize("filename, content, status, message", [
    ("model.exe", b"MZ", 415, "send one ending in .txt, .jsonl, .parquet"),
    ("notes.txt", b"caf\xe9 latin-1", 400, "line 1 is not UTF-8"),
    ("rows.jsonl", b'{"text": "ok"}\nnot json\n', 400, "line 2 is not JSON"),
    ("rows.jsonl", b'[1, 2]\n', 400, "line 1 is not a JSON object"),
    ("table.parquet", b"nope", 400, "not a Parquet file"),
    ("empty.txt", b"", 400, "empty"),
    ("big.txt", b"a" * (1024 * 1024 + 1), 413, "over 1 MB"),
])
def test_bad_uploads_are_refused_and_nothing_is_left_behind(stack, filename, content, status, message):
    http, _ = stack
    r = http.post("/datasets", data={"name": "bad-upload"}, files={"file": (filename, content)})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]
    assert not list((http.home / "data" / "uploads").glob("bad-upload/*"))


def test_upload_needs_a_valid_name(stack):
    http, _ = stack
    r = http.post("/datasets", data={"name": "Bad Name!"}, files={"file": ("a.txt", b"text")})
    assert r.status_code == 422 and "name" in r.json()["error"]["message"]


def test_the_worker_exports_job_states(stack):
    http, _ = stack
    body = httpx.get(http.worker_metrics, timeout=10).text
    states = {line.split('"')[1]: float(line.split()[-1]) for line in body.splitlines()
              if line.startswith("omniforge_worker_jobs{")}
    assert set(states) == {"queued", "running", "succeeded", "failed", "cancelled"}
    assert states["succeeded"] >= 1
