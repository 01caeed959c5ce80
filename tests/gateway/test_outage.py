"""A text service that goes away: 503 with Retry-After, and the gateway recovers by itself."""
import asyncio
import threading
import time

import httpx
import pytest

from support import Proc, free_port, wait_for


@pytest.fixture()
def pair(tiny_bundle, tmp_path):
    port = free_port()
    env = {"OMNIFORGE_TEXT_BUNDLE": str(tiny_bundle), "OMNIFORGE_TEXT_PORT": str(port),
           "OMNIFORGE_TEXT_GRACE_SECONDS": "0", "OMNIFORGE_TEXT_THREADS": "1"}
    text = Proc("omniforge_text.server", env, tmp_path / "text.log").start()
    gw_port = free_port()
    gateway = Proc("omniforge_gateway.app", {"OMNIFORGE_GATEWAY_PORT": str(gw_port),
                                             "OMNIFORGE_GATEWAY_TEXT_ADDRESS": f"127.0.0.1:{port}", "OMNIFORGE_GATEWAY_FUSION_ADDRESS": "", "OMNIFORGE_GATEWAY_IMAGE_ADDRESS": "", "OMNIFORGE_GATEWAY_AUDIO_ADDRESS": "",
                                             "OMNIFORGE_GATEWAY_RETRY_AFTER_S": "3"}, tmp_path / "gw.log").start()
    url = f"http://127.0.0.1:{gw_port}"
    wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, what="gateway ready")
    yield text, url
    gateway.stop()
    text.stop()


def test_service_down_gives_503_then_recovers(pair):
    text, url = pair
    body = {"prompt": "HAMLET:\n", "max_tokens": 5}
    assert httpx.post(f"{url}/generate", json=body).status_code == 200
    text.stop()
    r = httpx.post(f"{url}/generate", json=body)
    assert r.status_code == 503 and r.headers["retry-after"] == "3"
    assert "text service is unavailable" in r.json()["error"]["message"]
    ready = httpx.get(f"{url}/readyz")
    assert ready.status_code == 503 and ready.json()["ready"] is False
    assert httpx.get(f"{url}/healthz").status_code == 200          # the gateway itself is fine
    text.start()
    wait_for(lambda: httpx.post(f"{url}/generate", json=body).status_code == 200, timeout=30,
             what="gateway recovery")
    assert httpx.get(f"{url}/readyz").status_code == 200


def test_a_client_that_disconnects_cancels_its_generation(tiny_bundle, tmp_path):
    """The text service runs in this process, so its engine can be watched."""
    from omniforge_text.server import make_pool, serve
    from omniforge_text.settings import TextServiceSettings

    port = free_port()
    settings = TextServiceSettings(bundle=tiny_bundle, port=port, threads=1, grace_seconds=0)
    pool = make_pool(settings)
    pool.load_configured()
    engine = pool.get("tiny").engine
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=lambda: loop.run_until_complete(serve(settings, stop=stop, pool=pool)))
    thread.start()
    gw_port = free_port()
    gateway = Proc("omniforge_gateway.app", {"OMNIFORGE_GATEWAY_PORT": str(gw_port),
                                             "OMNIFORGE_GATEWAY_TEXT_ADDRESS": f"127.0.0.1:{port}",
                                             "OMNIFORGE_GATEWAY_FUSION_ADDRESS": "", "OMNIFORGE_GATEWAY_IMAGE_ADDRESS": "", "OMNIFORGE_GATEWAY_AUDIO_ADDRESS": ""},
                   tmp_path / "gw.log").start()
    try:
        url = f"http://127.0.0.1:{gw_port}"
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, what="gateway ready")
        # slow the engine down so the generation is surely still running when the client leaves
        forward = engine.backend.forward
        engine.backend.forward = lambda *a: (time.sleep(0.05), forward(*a))[1]
        for stream in (True, False):
            before = engine.cancelled
            with httpx.Client(base_url=url, timeout=0.5 if not stream else 30) as client:
                body = {"prompt": "HAMLET:\n", "max_tokens": 50, "stream": stream}
                if stream:
                    with client.stream("POST", "/generate", json=body) as r:
                        next(r.iter_lines())
                else:
                    with pytest.raises(httpx.ReadTimeout):
                        client.post("/generate", json=body)
            wait_for(lambda: engine.cancelled > before and not engine._running, timeout=5,
                     what=f"cancellation (stream={stream})")
    finally:
        gateway.stop()
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        pool.stop()
