"""API keys on a real gateway: scopes, revocation, rate limits (in-process and in a real Redis),
quotas, the admin API and the CLI; keys off only for a local run, and the gateway says so."""
import os
import subprocess
import sys
import time

import httpx
import pytest

from support import Proc, free_port, redis_answers, wait_for

REDIS_URL = "redis://127.0.0.1:6379/13"


def start_gateway(home, text_service, tmp_path, **env):
    port = free_port()
    proc = Proc("omniforge_gateway.app", {
        "OMNIFORGE_HOME": str(home), "OMNIFORGE_GATEWAY_PORT": str(port), "OMNIFORGE_GATEWAY_AUTH": "on",
        "OMNIFORGE_GATEWAY_TEXT_ADDRESS": text_service.address, "OMNIFORGE_GATEWAY_FUSION_ADDRESS": "",
        "OMNIFORGE_GATEWAY_IMAGE_ADDRESS": "", "OMNIFORGE_GATEWAY_AUDIO_ADDRESS": "", **env},
        tmp_path / f"gateway-{port}.log").start()
    proc.url = f"http://127.0.0.1:{port}"
    wait_for(lambda: proc.popen.poll() is not None or httpx.get(f"{proc.url}/healthz").status_code == 200,
             what=f"gateway (log {proc.log})")
    assert proc.popen.poll() is None, proc.log.read_text()
    return proc


def cli(home, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "omniforge_cli.main", "keys", *args], capture_output=True, text=True,
                          env={**os.environ, "OMNIFORGE_HOME": str(home), "COLUMNS": "200"}, timeout=60)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("keys-home")


@pytest.fixture(scope="module")
def keyed(home, text_service, tmp_path_factory):
    proc = start_gateway(home, text_service, tmp_path_factory.mktemp("logs"),
                         OMNIFORGE_GATEWAY_RATE_LIMIT_PER_MINUTE="1000")
    yield proc
    proc.stop()


def new_key(home, *scopes, **limits) -> str:
    args = ["create", "--name", "test"] + [a for s in scopes for a in ("--scope", s)]
    for k, v in limits.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    out = cli(home, *args)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def clear_of_the_minute_turning() -> None:
    """Rate limits count per calendar minute: a burst must not straddle two."""
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)


def gen(url, key=None, **headers):
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.post(f"{url}/generate", json={"prompt": "HAMLET:\n", "max_tokens": 2}, headers=headers, timeout=30)


def test_requests_need_a_key_whose_scope_covers_the_route(keyed, home):
    none = gen(keyed.url)
    assert none.status_code == 401 and "omniforge keys create" in none.json()["error"]["message"]
    assert none.json()["error"]["type"] == "authentication_error"
    assert gen(keyed.url, "of-000000000000-" + "x" * 43).status_code == 401
    key = new_key(home, "inference")
    ok = gen(keyed.url, key)
    assert ok.status_code == 200 and ok.headers["x-ratelimit-limit-requests"] == "1000"
    assert gen(keyed.url, **{"X-API-Key": key}).status_code == 200
    training = httpx.get(f"{keyed.url}/training/jobs", headers={"Authorization": f"Bearer {key}"})
    assert training.status_code == 403 and "'training'" in training.json()["error"]["message"]
    assert httpx.get(f"{keyed.url}/healthz").json() == {"status": "ok", "auth": "on"}   # open routes stay open
    assert httpx.get(f"{keyed.url}/metrics").status_code == 200


def test_only_salted_hashes_are_stored_and_revoked_keys_stop_working(keyed, home):
    import sqlite3

    key = new_key(home, "inference")
    key_id = key.split("-")[1]
    rows = sqlite3.connect(home / "registry.db").execute("select * from api_keys").fetchall()
    assert rows and not any(key in str(row) for row in rows)
    assert gen(keyed.url, key).status_code == 200
    listed = cli(home, "list")
    assert key_id in listed.stdout and key not in listed.stdout
    assert cli(home, "revoke", key_id).returncode == 0
    deadline = time.time() + 15                                        # verified keys are cached 10 s
    while gen(keyed.url, key).status_code == 200 and time.time() < deadline:
        time.sleep(0.5)
    assert gen(keyed.url, key).status_code == 401
    assert cli(home, "revoke", "nosuchkey").returncode != 0


def test_a_key_over_its_rate_limit_gets_429_with_retry_after(keyed, home):
    key = new_key(home, "inference", rate_limit=3)
    clear_of_the_minute_turning()
    replies = [gen(keyed.url, key) for _ in range(4)]
    assert [r.status_code for r in replies] == [200, 200, 200, 429]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in replies[:3]] == ["2", "1", "0"]
    limited = replies[-1]
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.json()["error"]["type"] == "rate_limit_error" and "3 requests a minute" in limited.json()["error"]["message"]
    other = new_key(home, "inference")                                 # limits are per key
    assert gen(keyed.url, other).status_code == 200


def test_a_daily_quota_is_enforced(keyed, home):
    key = new_key(home, "inference", quota_per_day=2)
    assert [gen(keyed.url, key).status_code for _ in range(2)] == [200, 200]
    over = gen(keyed.url, key)
    assert over.status_code == 429 and "quota" in over.json()["error"]["message"] and "retry-after" in over.headers


def test_the_admin_api_creates_lists_and_revokes_keys(keyed, home):
    admin = {"Authorization": f"Bearer {new_key(home, 'admin')}"}
    made = httpx.post(f"{keyed.url}/admin/keys", json={"name": "app", "scopes": ["inference", "training"]},
                      headers=admin)
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["key"].startswith(f"of-{body['id']}-") and body["scopes"] == ["inference", "training"]
    assert gen(keyed.url, body["key"]).status_code == 200
    listed = httpx.get(f"{keyed.url}/admin/keys", headers=admin).json()
    assert body["id"] in [k["id"] for k in listed] and all("key" not in k for k in listed)
    bad = httpx.post(f"{keyed.url}/admin/keys", json={"name": "x", "scopes": ["root"]}, headers=admin)
    assert bad.status_code == 422 and "inference, training, admin" in bad.json()["error"]["message"]
    user = {"Authorization": f"Bearer {body['key']}"}
    assert httpx.get(f"{keyed.url}/admin/keys", headers=user).status_code == 403
    assert httpx.delete(f"{keyed.url}/admin/keys/{body['id']}", headers=admin).json()["revoked_at"]


def test_the_openai_client_sends_its_key(keyed, home):
    openai = pytest.importorskip("openai")
    key = new_key(home, "inference")
    ok = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key=key, max_retries=0)
    assert ok.completions.create(model="tiny", prompt="HAMLET:\n", max_tokens=3).usage.completion_tokens == 3
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{keyed.url}/v1", api_key="sk-wrong", max_retries=0).models.list()


def test_rate_limits_are_shared_through_redis(home, text_service, tmp_path):
    """Two gateways counting in one Redis: a key's limit holds across both."""
    if not redis_answers(REDIS_URL):
        pytest.skip("no Redis at 127.0.0.1:6379")
    import redis

    redis.from_url(REDIS_URL).flushdb()
    a = start_gateway(home, text_service, tmp_path, OMNIFORGE_REDIS_URL=REDIS_URL)
    b = start_gateway(home, text_service, tmp_path, OMNIFORGE_REDIS_URL=REDIS_URL)
    try:
        key = new_key(home, "inference", rate_limit=4)
        clear_of_the_minute_turning()
        codes = [gen(url, key).status_code for url in (a.url, b.url, a.url, b.url, a.url)]
        assert codes == [200, 200, 200, 200, 429]
        assert any(k.startswith(b"omniforge:ratelimit:") for k in redis.from_url(REDIS_URL).keys())
    finally:
        a.stop()
        b.stop()


def test_keys_can_be_off_only_for_a_local_run(home, text_service, tmp_path):
    public = Proc("omniforge_gateway.app", {"OMNIFORGE_HOME": str(home), "OMNIFORGE_GATEWAY_AUTH": "off",
                                            "OMNIFORGE_GATEWAY_HOST": "0.0.0.0", "OMNIFORGE_GATEWAY_PORT": str(free_port())},
                  tmp_path / "public.log").start()
    assert public.popen.wait(60) != 0
    assert "OMNIFORGE_GATEWAY_AUTH=off is for local runs only" in public.log.read_text()
    local = start_gateway(home, text_service, tmp_path, OMNIFORGE_GATEWAY_AUTH="off")
    try:
        health = httpx.get(f"{local.url}/healthz").json()
        assert health["auth"] == "off" and "OFF" in health["warning"]
        assert gen(local.url).status_code == 200
        assert "API keys are OFF" in local.log.read_text()
    finally:
        local.stop()
