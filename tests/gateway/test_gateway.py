"""The gateway as a real uvicorn process in front of a real text service process."""
import json

import httpx
import pytest

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def http(gateway):
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        yield client


def test_generate_returns_text_usage_and_model(http):
    r = http.post("/generate", json={"prompt": "HAMLET:\n", "max_tokens": 12, "seed": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "tiny" and body["model_version"] == "1" and body["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 12 and len(body["text"]) == 12
    again = http.post("/generate", json={"prompt": "HAMLET:\n", "max_tokens": 12, "seed": 1}).json()
    assert again["text"] == body["text"]


def test_streaming_answers_with_server_sent_events(http):
    whole = http.post("/generate", json={"prompt": "HAMLET:\n", "max_tokens": 15, "seed": 9}).json()["text"]
    with http.stream("POST", "/generate", json={"prompt": "HAMLET:\n", "max_tokens": 15, "seed": 9,
                                                "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["text"] for c in chunks) == whole
    assert chunks[-1]["finish_reason"] == "length" and chunks[-1]["usage"]["completion_tokens"] == 15


@pytest.mark.parametrize("body, status, message", [
    ({"prompt": 5}, 422, "prompt: Input should be a valid string"),
    ({"prompt": ["a"]}, 422, "prompt: Input should be a valid string"),
    ({}, 422, "prompt: Field required"),
    ({"prompt": "x", "max_tokens": 0}, 422, "max_tokens: Input should be greater than or equal to 1"),
    ({"prompt": "x", "max_tokens": 100000}, 422, "max_tokens=100000 is over the limit; send 1..4096"),
    ({"prompt": "x", "max_tokens": 64}, 400, "send max_tokens <= 63"),
    ({"prompt": "x" * 200}, 400, "prompt is 200 tokens; the model's context is 64 tokens"),
    ({"prompt": "x", "temperature": -0.5}, 422, "temperature: Input should be greater than or equal to 0"),
    ({"prompt": "x", "model": "gpt-17"}, 404, "model 'gpt-17' is not served here; available: tiny"),
    ({"prompt": "x", "colour": "red"}, 422, "colour: Extra inputs are not permitted"),
])
def test_bad_input_gets_a_4xx_that_says_what_to_send(http, body, status, message):
    r = http.post("/generate", json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]
    assert r.json()["error"]["code"]


@pytest.mark.parametrize("raw, status, message", [
    (b'{"prompt": "x", "temperature": NaN}', 422, "temperature: Input should be a finite number"),
    (b'{"prompt": "x",', 400, "not valid JSON"),
    (b'{"prompt": "\xff\xfe"}', 400, "encoded as UTF-8"),
    (b'[1, 2]', 400, "valid dictionary"),
])
def test_malformed_bodies_are_refused(http, raw, status, message):
    r = http.post("/generate", content=raw, headers=JSON)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]


def test_a_non_json_content_type_is_named(http):
    r = http.post("/generate", content=b"prompt=x", headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and "Content-Type: application/json" in r.json()["error"]["message"]


def test_models_health_and_readiness(http):
    models = http.get("/models").json()["models"]
    assert [(m["name"], m["service"], m["context_length"]) for m in models] == [("tiny", "text", 64)]
    assert http.get("/healthz").json()["status"] == "ok"
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["services"]["text"]["status"] == "SERVING"


def test_metrics_count_requests_tokens_and_time_to_first_token(http):
    http.post("/generate", json={"prompt": "HAMLET:\n", "max_tokens": 5})
    with http.stream("POST", "/generate", json={"prompt": "HAMLET:\n", "max_tokens": 5, "stream": True}) as r:
        list(r.iter_lines())
    text = http.get("/metrics").text
    assert 'omniforge_gateway_requests_total{model="",route="/generate",status="200"}' in text
    assert "omniforge_gateway_request_duration_seconds_bucket" in text
    assert "omniforge_gateway_time_to_first_token_seconds_count" in text
    assert "omniforge_gateway_inter_token_latency_seconds_count" in text
    tokens = [line for line in text.splitlines() if line.startswith("omniforge_gateway_tokens_generated_total")]
    assert tokens and float(tokens[0].split()[-1]) >= 10
