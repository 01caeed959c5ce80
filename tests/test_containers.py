"""The CPU stack from its container images (`make images`), brought up with docker-compose.yml by
podman-compose: the gateway and the four model services, their models from a registry on the
shared volume; /generate, /caption, /speech and /transcribe answer through the gateway
container, and the stack comes down clean."""
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
IMAGES = ("gateway", "text", "image", "audio", "fusion")
PROJECT = "omniforge-ci"
CONF = str(ROOT / "deploy" / "podman" / "containers.conf")


def _have_images() -> str:
    if shutil.which("podman") is None:
        return "podman is not installed (`make images` installs it)"
    env = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", CONF)}
    missing = [n for n in IMAGES if subprocess.run(["podman", "image", "exists", f"omniforge/{n}:0.1.0"],
                                                   env=env).returncode != 0]
    return f"images not built: {missing} (run `make images`)" if missing else ""


pytestmark = pytest.mark.skipif(bool(_have_images()), reason=_have_images() or "ok")


def compose(env: dict, *args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "podman_compose", "-p", PROJECT, "-f", str(ROOT / "docker-compose.yml"),
                           *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_bundle, tiny_clip_bundle, tiny_caption_bundle, tiny_diffusion_bundle, speech_bundles):
    from omniforge_shared.artifacts import LocalArtifactStore
    from omniforge_shared.keys import KeyStore
    from omniforge_shared.registry import Registry

    # the shared volume: a registry with every model in production, and a key for the gateway
    home = tmp_path_factory.mktemp("compose-home")
    registry = Registry(f"sqlite:///{home / 'registry.db'}", LocalArtifactStore(home / "artifacts"))
    registry.upgrade()
    for bundle in (tiny_bundle, tiny_clip_bundle, tiny_caption_bundle, tiny_diffusion_bundle, *speech_bundles):
        registry.register_bundle(Path(bundle), stage="production")
    _, key = KeyStore(registry).create(name="compose-test", scopes=["inference"])
    registry.close()
    subprocess.run(["chmod", "-R", "a+rwX", str(home)], check=True)        # the containers run as uid 10001
    env = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", CONF),
           "OMNIFORGE_COMPOSE_HOME": str(home), "OMNIFORGE_GATEWAY_AUTH": "on", "OMNIFORGE_NETWORK_MODE": "host", "OMNIFORGE_SERVICE_HOST": "127.0.0.1",
           "OMNIFORGE_DATABASE_URL": "sqlite:////var/lib/omniforge/registry.db", "OMNIFORGE_REDIS_URL": "",
           "OMNIFORGE_CHROMA_URL": "", "OMNIFORGE_TRAINING_BROKER_URL": "sqla+sqlite:////var/lib/omniforge/broker.db",
           "OMNIFORGE_TRAINING_RESULT_BACKEND": "db+sqlite:////var/lib/omniforge/results.db"}
    up = compose(env, "up", "-d", "--no-deps", *IMAGES)
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    url = "http://127.0.0.1:8000"
    try:
        wait_for(lambda: _ready(url), timeout=240, what="the gateway container ready with every service")
        yield url, {"Authorization": f"Bearer {key}"}, env
    except TimeoutError:
        logs = subprocess.run(["podman", "logs", "--tail", "30", f"{PROJECT}_gateway_1"], env=env, capture_output=True,
                              text=True)
        raise AssertionError(f"stack not ready: {httpx.get(url + '/readyz').text if _up(url) else 'no gateway'}\n"
                             f"{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
    finally:
        compose(env, "down", "-t", "10")


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
    assert sorted(running) == sorted(f"{PROJECT}_{n}_1" for n in IMAGES)


def test_the_stack_comes_down_clean(stack):
    """Runs last in this module: after `down` no container of the project is left."""
    url, auth, env = stack
    down = compose(env, "down", "-t", "10")
    assert down.returncode == 0, down.stderr[-2000:]
    left = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}", "--filter",
                           f"label=io.podman.compose.project={PROJECT}"], env=env, capture_output=True, text=True)
    assert left.stdout.split() == []
    assert not _up(url)
