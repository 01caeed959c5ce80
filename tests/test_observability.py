"""Metrics under one naming scheme and JSON logs with request ids, across real processes."""
import json
import time

import httpx
import pytest

from support import wait_for


@pytest.fixture(scope="module")
def http(gateway):
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        yield client


def json_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_one_request_id_in_the_response_and_in_both_processes_logs(http, gateway, text_service):
    r = http.post("/generate", json={"prompt": "HAMLET:\n", "max_tokens": 4}, headers={"X-Request-ID": "trace-42.a"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "trace-42.a"
    made = http.post("/generate", json={"prompt": "HAMLET:\n", "max_tokens": 4, "stream": True})
    rid = made.headers["x-request-id"]
    assert len(rid) == 32 and rid != "trace-42.a"          # one is made when none is sent
    bad = http.post("/generate", json={"prompt": "x"}, headers={"X-Request-ID": "spaces are not taken"})
    assert bad.headers["x-request-id"] != "spaces are not taken"
    for wanted in ("trace-42.a", rid):
        wait_for(lambda: any(line["request_id"] == wanted for line in json_lines(text_service.log)),
                 timeout=5, what=f"{wanted} in the text service's log")
        assert any(line["request_id"] == wanted and "/generate" in line["message"]
                   for line in json_lines(gateway.log))
    text_line = next(line for line in json_lines(text_service.log) if line["request_id"] == "trace-42.a")
    assert text_line["component"] == "text" and "Generate tiny:1 OK" in text_line["message"]


def test_every_log_line_is_one_json_object_with_the_standard_fields(gateway, text_service):
    for proc, component in ((gateway, "gateway"), (text_service, "text")):
        lines = proc.log.read_text().splitlines()
        assert lines
        for line in lines:
            record = json.loads(line)
            assert {"time", "level", "component", "request_id", "message"} <= set(record)
            assert record["component"] == component


def test_the_text_service_exports_its_metrics(http, text_service):
    http.post("/generate", json={"prompt": "HAMLET:\n", "max_tokens": 6, "seed": 3})
    body = httpx.get(text_service.metrics_url).text
    assert 'omniforge_text_requests_total{model="tiny",route="Generate",status="OK",version="1"}' in body
    for name in ("omniforge_text_request_duration_seconds_bucket", "omniforge_text_time_to_first_token_seconds_count",
                 "omniforge_text_inter_token_latency_seconds_count", "omniforge_text_tokens_generated_total",
                 'omniforge_text_engine_queue_depth_requests{model="tiny",version="1"}',
                 'omniforge_text_running_batch_size_sequences{model="tiny",version="1"}',
                 "omniforge_text_model_load_seconds_count"):
        assert name in body, name
    bad = http.post("/generate", json={"prompt": "x", "model": "nope"})
    assert bad.status_code == 404
    body = httpx.get(text_service.metrics_url).text
    assert 'route="Generate",status="NOT_FOUND"' in body


def test_a_bad_log_format_is_refused_with_the_variable_named(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "omniforge_gateway.app"], capture_output=True, text=True,
                         timeout=60, env={**__import__("os").environ, "OMNIFORGE_LOG_FORMAT": "xml"})
    assert out.returncode != 0 and "OMNIFORGE_LOG_FORMAT='xml'" in out.stderr
