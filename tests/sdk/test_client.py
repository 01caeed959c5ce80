"""The SDK against the live gateway."""
import pytest

from omniforge_sdk import (APIConnectionError, AsyncClient, BadRequestError, Client, Generation, NotFoundError,
                           ServiceUnavailableError)
from support import free_port


def test_generate_and_stream(gateway):
    with Client(base_url=gateway.url) as client:
        gen = client.generate(prompt="HAMLET:\n", max_tokens=10, seed=4)
        assert isinstance(gen, Generation) and gen.usage.completion_tokens == 10
        chunks = list(client.generate(prompt="HAMLET:\n", max_tokens=10, seed=4, stream=True))
        assert "".join(c.text for c in chunks) == gen.text
        assert chunks[-1].finish_reason == "length" and chunks[-1].usage.completion_tokens == 10
        assert [m.name for m in client.models.list()] == ["tiny"]


def test_typed_errors(gateway):
    with Client(base_url=gateway.url) as client:
        with pytest.raises(BadRequestError, match="max_tokens") as e:
            client.generate(prompt="x", max_tokens=0)
        assert e.value.status_code == 422
        with pytest.raises(NotFoundError):
            client.generate(prompt="x", model="nope")
        with pytest.raises(BadRequestError):
            list(client.generate(prompt="x" * 500, stream=True))
    with pytest.raises(APIConnectionError):
        Client(base_url=f"http://127.0.0.1:{free_port()}").generate(prompt="x")


async def test_async_twin(gateway):
    async with AsyncClient(base_url=gateway.url) as client:
        gen = await client.generate(prompt="HAMLET:\n", max_tokens=8, seed=2)
        chunks = [c async for c in await client.generate(prompt="HAMLET:\n", max_tokens=8, seed=2, stream=True)]
        assert "".join(c.text for c in chunks) == gen.text
        with pytest.raises(BadRequestError):
            await client.generate(prompt=5)


def test_the_sdk_depends_on_httpx_only():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "sdk" / "python" / "pyproject.toml").read_text())
    assert project["project"]["dependencies"] == ["httpx"]


def test_service_unavailable_carries_retry_after():
    from omniforge_sdk._errors import error_for

    err = error_for(503, {"error": {"code": "service_unavailable", "message": "down"}}, {"retry-after": "2"})
    assert isinstance(err, ServiceUnavailableError) and err.retry_after == 2.0


def test_429_and_503_are_retried_after_retry_after():
    """The retry policy on its own (the gateway's real 503 with Retry-After is tested in
    tests/gateway/test_outage.py): two refusals, then the answer."""
    import time

    import httpx

    from omniforge_sdk import Client, RateLimitError

    calls = []

    def answer(request):
        calls.append(time.monotonic())
        if len(calls) == 1:
            return httpx.Response(429, json={"error": {"code": "rate_limit_exceeded", "message": "slow down"}},
                                  headers={"retry-after": "0.2"})
        if len(calls) == 2:
            return httpx.Response(503, json={"error": {"code": "service_unavailable", "message": "down"}})
        return httpx.Response(200, json={"voices": []})

    client = Client(base_url="http://test", http_client=httpx.Client(base_url="http://test",
                                                                      transport=httpx.MockTransport(answer)))
    assert client.voices() == [] and len(calls) == 3
    assert calls[1] - calls[0] >= 0.2 and calls[2] - calls[1] >= 0.9        # Retry-After, then backoff 1 s
    calls.clear()
    no_retries = Client(base_url="http://test", max_retries=0,
                        http_client=httpx.Client(base_url="http://test", transport=httpx.MockTransport(answer)))
    with pytest.raises(RateLimitError):
        no_retries.voices()
