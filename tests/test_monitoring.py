"""The Grafana dashboards and alert rules against a real Prometheus scraping the real processes
(gateway, text, image, audio and fusion services, training worker) after traffic on every
route: every panel's query returns data, every metric it names is exported, and every alert
rule is valid (promtool) and evaluates without error."""
import io
import json
import math
import re
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
from PIL import Image

from support import Proc, build_hamlet_dataset, free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
METRIC = re.compile(r"\b(omniforge_[a-z_]+)\b")

needs_prometheus = pytest.mark.skipif(shutil.which("prometheus") is None or shutil.which("promtool") is None,
                                      reason="Prometheus is not installed (Debian package prometheus)")


def panel_queries() -> list[tuple[str, str, str]]:
    return [(path.stem, panel["title"], target["expr"])
            for path in DASHBOARDS for panel in json.loads(path.read_text())["panels"] for target in panel["targets"]]


def test_dashboards_are_grafana_json_with_a_query_per_panel():
    assert {p.stem for p in DASHBOARDS} >= {"serving", "training"}
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        assert board["uid"] and board["title"] and board["panels"]
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == "prometheus" and panel["targets"], panel["title"]
            assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]


@needs_prometheus
def test_promtool_accepts_the_alert_rules():
    out = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 6 rules found" in out.stdout


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("logs") / "worker.log"
    proc = Proc("omniforge_training.jobs.worker", {"OMNIFORGE_WORKER_METRICS_PORT": str(port)}, log).start()
    proc.metrics_url = f"http://127.0.0.1:{port}/metrics"
    wait_for(lambda: _answers(proc.metrics_url), timeout=60, what=f"worker metrics (log {log})")
    yield proc
    proc.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def prometheus(full_gateway, text_service, image_service, audio_service, fusion_service, worker, tmp_path_factory):
    home = tmp_path_factory.mktemp("prometheus")
    targets = {"omniforge-gateway": full_gateway.url + "/metrics", "omniforge-text": text_service.metrics_url,
               "omniforge-image": image_service.metrics_url, "omniforge-audio": audio_service.metrics_url,
               "omniforge-fusion": fusion_service.metrics_url, "omniforge-worker": worker.metrics_url}
    jobs = "".join(f"  - job_name: {job}\n    static_configs: [{{targets: [\"{urlparse(url).netloc}\"]}}]\n"
                   for job, url in targets.items())
    (home / "prometheus.yml").write_text("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                                         f"rule_files: [\"{ALERTS}\"]\nscrape_configs:\n{jobs}")
    port = free_port()
    proc = subprocess.Popen(["prometheus", f"--config.file={home / 'prometheus.yml'}",
                             f"--storage.tsdb.path={home / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=open(home / "prometheus.log", "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{url}/-/ready"), timeout=60, what=f"prometheus (log {home / 'prometheus.log'})")
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def start_training(base: str, tmp: Path) -> str:
    """A small text-lm job on the worker, running while the panels are read (its step rate)."""
    from omniforge_shared.registry_settings import RegistrySettings
    from omniforge_shared.settings import load_settings

    registry = load_settings(RegistrySettings).open()
    try:
        registry.register_dataset(build_hamlet_dataset(tmp), name="monitoring-hamlet")
    finally:
        registry.close()
    params = dict(tokenizer="bpe", vocab_size=512, n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=4,
                  eval_interval=1000, checkpoint_interval=1000, threads=1, max_iters=100_000)
    r = httpx.post(f"{base}/training/jobs", json={"recipe": "text-lm", "dataset": "monitoring-hamlet",
                                                  "model_name": "monitoring-lm", "params": params}, timeout=30)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def drive_traffic(base: str) -> None:
    """A request on every kind of route, a streamed one, and a few refusals."""
    with httpx.Client(base_url=base, timeout=120) as http:
        for seed in range(3):
            assert http.post("/generate", json={"prompt": "HAMLET:\n", "max_tokens": 8, "seed": seed}).status_code == 200
        with http.stream("POST", "/generate", json={"prompt": "HAMLET:\n", "max_tokens": 8, "stream": True}) as r:
            assert r.status_code == 200 and "[DONE]" in "".join(r.iter_lines())
        assert http.post("/v1/completions", json={"model": "tiny", "prompt": "To be", "max_tokens": 4}).status_code == 200
        assert http.post("/caption", files={"file": ("x.png", _png(), "image/png")}).status_code == 200
        assert http.post("/embed", json={"input": ["a red heart"]}).status_code == 200
        assert http.post("/search", json={"query": "a red heart", "k": 2}).status_code in (200, 404)
        assert http.post("/images/generations", json={"prompt": "a bat", "steps": 2, "seed": 1}).status_code == 200
        speech = http.post("/speech", json={"text": "Good morning to you.", "voice": "joe"})
        assert speech.status_code == 200
        assert http.post("/transcribe", files={"file": ("s.wav", speech.content, "audio/wav")}).status_code == 200
        assert http.post("/generate", json={"prompt": 7}).status_code == 422          # 4xx shows on the error panel
        assert http.get("/models").status_code == 200


@needs_prometheus
def test_every_panel_shows_data_and_every_rule_evaluates(prometheus, full_gateway, tmp_path):
    job = start_training(full_gateway.url, tmp_path)
    try:
        check_panels_and_rules(prometheus, full_gateway.url)
    finally:
        httpx.post(f"{full_gateway.url}/training/jobs/{job}/cancel", timeout=30)


def check_panels_and_rules(prometheus: str, gateway: str) -> None:
    api = httpx.Client(base_url=prometheus, timeout=30)

    def query(expr: str) -> list:
        body = api.get("/api/v1/query", params={"query": expr}).json()
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    # every target up, and two scrapes after the traffic so that rate() sees it
    wait_for(lambda: len([r for r in query('up{job=~"omniforge.*"}') if r["value"][1] == "1"]) == 6, timeout=60,
             what="prometheus scraping all six processes")
    wait_for(lambda: query("omniforge_worker_step_rate_steps_per_second"), timeout=120,
             what="the training job reporting its step rate")
    # traffic twice, scraped between and after: a series born with the first request has no
    # increase until a later scrape sees it grow, as with live traffic
    drive_traffic(gateway)
    time.sleep(3)
    drive_traffic(gateway)
    time.sleep(3)
    exported = set(api.get("/api/v1/label/__name__/values").json()["data"])
    empty, unknown = [], []
    for board, title, expr in panel_queries():
        values = [float(r["value"][1]) for r in query(expr)]
        if not any(not math.isnan(v) for v in values):
            empty.append(f"{board}: {title}: {expr}")
        unknown += [f"{board}: {title}: {name}" for name in METRIC.findall(expr) if name not in exported]
    assert not unknown, "panels query metrics nothing exports:\n" + "\n".join(unknown)
    assert not empty, "panels without data:\n" + "\n".join(empty)

    def rules() -> list[dict]:
        groups = api.get("/api/v1/rules").json()["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]

    wait_for(lambda: len(rules()) == 6 and all(r.get("lastEvaluation", "").startswith("20") for r in rules()),
             timeout=30, what="the alert rules evaluated")
    assert [r["name"] for r in rules() if r["health"] != "ok"] == []
    firing = [r["name"] for r in rules() if r["state"] == "firing"]
    assert firing == [], f"alerts firing on a healthy stack: {firing}"
