"""Input that is valid JSON but not valid Unicode, and routes whose service is not configured."""
import httpx
import pytest

from support import Proc, free_port, wait_for

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def http(gateway):
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        yield client


@pytest.mark.parametrize("raw, where", [
    (rb'{"prompt": "ab\ud800cd"}', "prompt holds an unpaired UTF-16 surrogate ('\\ud800' at character 2)"),
    (rb'{"prompt": "\udfff"}', "prompt holds an unpaired UTF-16 surrogate"),
    (rb'{"prompt": "x", "stop": ["ok", "\ud83d"]}', "stop[1] holds an unpaired UTF-16 surrogate"),
    (rb'{"prompt": "x", "model": "\udc00"}', "model holds an unpaired UTF-16 surrogate"),
])
def test_unpaired_surrogates_get_a_400_that_says_so(http, raw, where):
    r = http.post("/generate", content=raw, headers=JSON)
    assert r.status_code == 400, r.text
    assert where in r.json()["error"]["message"] and "valid Unicode" in r.json()["error"]["message"]
    assert http.post("/generate", json={"prompt": "HAMLET:\n", "max_tokens": 2}).status_code == 200


def test_a_paired_surrogate_escape_is_ordinary_text(http):
    r = http.post("/generate", content=rb'{"prompt": "\ud83d\ude00 ", "max_tokens": 2}', headers=JSON)
    assert r.status_code in (200, 400), r.text           # 400 only when the char model cannot encode it
    assert "surrogate" not in r.text


def test_job_bodies_are_checked_too(http):
    r = http.post("/training/jobs", content=rb'{"recipe": "text-lm", "dataset": "x", "params": {"\ud800": 1}}',
                  headers=JSON)
    assert r.status_code == 400 and "(a key) holds an unpaired UTF-16 surrogate" in r.json()["error"]["message"]


def test_a_route_whose_service_is_not_configured_answers_503_naming_the_variable(tmp_path):
    port = free_port()
    gateway = Proc("omniforge_gateway.app", {"OMNIFORGE_GATEWAY_PORT": str(port), "OMNIFORGE_GATEWAY_TEXT_ADDRESS": "",
                                             "OMNIFORGE_GATEWAY_FUSION_ADDRESS": "", "OMNIFORGE_GATEWAY_IMAGE_ADDRESS": "", "OMNIFORGE_GATEWAY_AUDIO_ADDRESS": "",
                                             "OMNIFORGE_HOME": str(tmp_path)}, tmp_path / "gw.log").start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{url}/healthz").status_code == 200, what="gateway up")
        r = httpx.post(f"{url}/generate", json={"prompt": "x"})
        assert r.status_code == 503
        assert "text service is not configured" in r.json()["error"]["message"]
        assert "OMNIFORGE_GATEWAY_TEXT_ADDRESS" in r.json()["error"]["message"]
        ready = httpx.get(f"{url}/readyz").json()
        assert ready["services"] == {} and "text" in ready["not_configured"]
        assert httpx.get(f"{url}/models").json() == {"models": []}
    finally:
        gateway.stop()


def test_readyz_lists_every_configured_service(http, text_service):
    body = http.get("/readyz").json()
    assert body["services"] == {"text": {"address": text_service.address, "status": "SERVING"}}
    assert sorted(body["not_configured"]) == ["audio", "fusion", "image"]
