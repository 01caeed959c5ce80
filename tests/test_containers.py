"""The CPU stack from its container images (`make images`), brought up with docker-compose.yml by
podman-compose: Redis, PostgreSQL, the gateway, the four model services and the training worker.
Models are registered into the PostgreSQL registry by a one-off worker container; /generate,
/caption, /speech and /transcribe answer through the gateway container, an uploaded dataset is
built by the worker container, and the stack comes down clean. (Chroma, Prometheus and Grafana
are in the compose file too; here the fusion service uses its embedded index, and the
dashboards are tested against a real Prometheus in tests/test_monitoring.py.)"""
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from support import wait_for

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ("gateway", "text", "image", "audio", "fusion", "trainer")
SERVICES = ("gateway", "text", "image", "audio", "fusion", "worker")
INFRA = {"OMNIFORGE_REDIS_IMAGE": "localhost/omniforge-redis:bookworm",
         "OMNIFORGE_POSTGRES_IMAGE": "localhost/omniforge-postgres:bookworm"}
PROJECT = "omniforge-ci"
CONF = str(ROOT / "deploy" / "podman" / "containers.conf")


def _have_images() -> str:
    if shutil.which("podman") is None:
        return "podman is not installed (`make images` installs it)"
    env = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", CONF)}
    missing = [n for n in [f"omniforge/{n}:0.1.0" for n in IMAGES] + list(INFRA.values())
               if subprocess.run(["podman", "image", "exists", n], env=env).returncode != 0]
    return f"images not built: {missing} (run `make images`)" if missing else ""


pytestmark = pytest.mark.skipif(bool(_have_images()), reason=_have_images() or "ok")


def compose(env: dict, *args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "podman_compose", "-p", PROJECT, "-f", str(ROOT / "docker-compose.yml"),
                           *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_bundle, tiny_clip_bundle, tiny_caption_bundle, tiny_diffusion_bundle, speech_bundles):
    # the shared volume: the bundles to register (the registry itself is the PostgreSQL container's)
    home = tmp_path_factory.mktemp("compose-home")
    for i, bundle in enumerate((tiny_bundle, tiny_clip_bundle, tiny_caption_bundle, tiny_diffusion_bundle,
                                *speech_bundles)):
        shutil.copytree(bundle, home / "bundles" / str(i))
    subprocess.run(["chmod", "-R", "a+rwX", str(home)], check=True)        # the containers run as uid 10001
    env = {**os.environ, **INFRA, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", CONF),
           "OMNIFORGE_COMPOSE_HOME": str(home), "OMNIFORGE_GATEWAY_AUTH": "on", "OMNIFORGE_CHROMA_URL": ""}
    for name in ("OMNIFORGE_DATABASE_URL", "OMNIFORGE_REDIS_URL", "OMNIFORGE_TRAINING_BROKER_URL",
                 "OMNIFORGE_TRAINING_RESULT_BACKEND"):
        env.pop(name, None)                                                 # the compose file's own
    url = "http://127.0.0.1:8000"
    try:
        up = compose(env, "up", "-d", "--no-deps", "redis", "postgres")
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        wait_for(lambda: subprocess.run(["podman", "exec", f"{PROJECT}_postgres_1", "pg_isready", "-U", "omniforge", "-h", "127.0.0.1",
                                         "-p", "5432"],
                                        env=env, capture_output=True).returncode == 0, timeout=90, what="PostgreSQL")
        # 1. a one-off worker container registers every model in production and makes a key
        setup = compose(env, "run", "--rm", "--no-deps", "worker", "sh", "-c",
                        "for d in /var/lib/omniforge/bundles/*; do omniforge models register $d --stage production "
                        "|| exit 1; done && omniforge keys create --name compose --scope inference --scope training")
        assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]
        key = setup.stdout.strip().splitlines()[-1]
        assert key.startswith("of-"), setup.stdout[-2000:]
        # 2. the services, the gateway and the worker
        up = compose(env, "up", "-d", "--no-deps", *SERVICES)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        try:
            wait_for(lambda: _ready(url), timeout=240, what="the gateway container ready with every service")
        except TimeoutError:
            logs = subprocess.run(["podman", "logs", "--tail", "30", f"{PROJECT}_gateway_1"], env=env,
                                  capture_output=True, text=True)
            raise AssertionError(f"stack not ready: {httpx.get(url + '/readyz').text if _up(url) else 'no gateway'}\n"
                                 f"{logs.stdout[-3000:]}{logs.stderr[-3000:]}") from None
        yield url, {"Authorization": f"Bearer {key}"}, env
    finally:
        compose(env, "down", "-v", "-t", "10")


def _up(url: str) -> bool:
    try:
        httpx.get(f"{url}/healthz", timeout=2)
        return True
    except httpx.HTTPError:
        return False


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_gateway_container_answers_every_modality(stack):
    url, auth, env = stack
    with httpx.Client(base_url=url, headers=auth, timeout=120) as http:
        assert http.post("/generate", json={"prompt": "HAMLET:\n", "max_tokens": 5}).json()["usage"]["completion_tokens"] == 5
        buf = io.BytesIO()
        Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(buf, "PNG")
        caption = http.post("/caption", files={"file": ("x.png", buf.getvalue(), "image/png")})
        assert caption.status_code == 200 and caption.json()["caption"]
        speech = http.post("/speech", json={"text": "Good morning to you.", "voice": "joe"})
        assert speech.status_code == 200 and speech.headers["content-type"] == "audio/wav" and len(speech.content) > 20_000
        heard = http.post("/transcribe", files={"file": ("s.wav", speech.content, "audio/wav")})
        assert heard.status_code == 200 and heard.json()["text"]
        assert http.get("/generate").status_code == 405 and httpx.post(f"{url}/generate", json={}).status_code == 401
    running = subprocess.run(["podman", "ps", "--format", "{{.Names}}", "--filter", f"label=io.podman.compose.project={PROJECT}"],
                             env=env, capture_output=True, text=True).stdout.split()
    assert sorted(running) == sorted(f"{PROJECT}_{n}_1" for n in (*SERVICES, "redis", "postgres"))


def test_the_worker_container_builds_an_uploaded_dataset(stack):
    """The gateway queues the job on Redis, the worker container builds the dataset and registers it in
    PostgreSQL, and the gateway lists it."""
    import time

    url, auth, _ = stack
    text = "\n\n".join(f"Paragraph {i}: the river runs past the mill and the miller counts the sacks." for i in range(300))
    r = httpx.post(f"{url}/datasets", headers=auth, files={"file": ("rivers.txt", text.encode(), "text/plain")},
                   data={"name": "rivers", "tokenizer": "char"}, timeout=60)
    assert r.status_code == 202, r.text
    job = r.json()["job"]["id"]
    deadline = time.time() + 180
    state = ""
    while time.time() < deadline and state not in ("succeeded", "failed", "cancelled"):
        time.sleep(2)
        state = httpx.get(f"{url}/training/jobs/{job}", headers=auth, timeout=30).json()["state"]
    assert state == "succeeded", httpx.get(f"{url}/training/jobs/{job}/logs", headers=auth).text[-2000:]
    assert "rivers" in [d["name"] for d in httpx.get(f"{url}/datasets", headers=auth, timeout=30).json()]


def test_the_stack_comes_down_clean(stack):
    """Runs last in this module: after `down` no container of the project is left."""
    url, auth, env = stack
    down = compose(env, "down", "-v", "-t", "10")
    assert down.returncode == 0, down.stderr[-2000:]
    left = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}", "--filter",
                           f"label=io.podman.compose.project={PROJECT}"], env=env, capture_output=True, text=True)
    assert left.stdout.split() == []
    assert not _up(url)
