"""HTTPS at the gateway and mutual TLS between the gateway and a service, with the certificates
`make certs` makes: real processes, real handshakes."""
import subprocess
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from support import Proc, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    done = subprocess.run(["bash", str(ROOT / "deploy" / "certs.sh"), str(out)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return out


def _health(address: str, credentials=None) -> int:
    channel = grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    with channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


@pytest.fixture(scope="module")
def mtls_text(tiny_bundle, certs, tmp_path_factory):
    port = free_port()
    proc = Proc("omniforge_text.server", {
        "OMNIFORGE_TEXT_BUNDLE": str(tiny_bundle), "OMNIFORGE_TEXT_PORT": str(port), "OMNIFORGE_TEXT_THREADS": "1",
        "OMNIFORGE_TEXT_METRICS_PORT": str(free_port()), "OMNIFORGE_TEXT_TLS_CERT": str(certs / "server.pem"),
        "OMNIFORGE_TEXT_TLS_KEY": str(certs / "server.key"), "OMNIFORGE_TEXT_TLS_CLIENT_CA": str(certs / "ca.pem")},
        tmp_path_factory.mktemp("logs") / "text-mtls.log").start()
    proc.address = f"localhost:{port}"
    client = grpc.ssl_channel_credentials((certs / "ca.pem").read_bytes(), (certs / "client.key").read_bytes(),
                                          (certs / "client.pem").read_bytes())
    wait_for(lambda: _serving(proc.address, client), timeout=60, what=f"text service with mutual TLS ({proc.log})")
    yield proc
    proc.stop()


def _serving(address, credentials) -> bool:
    try:
        return _health(address, credentials) == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def test_the_service_refuses_clients_without_a_certificate_from_the_ca(mtls_text, certs):
    with pytest.raises(grpc.RpcError):
        _health(mtls_text.address)                                            # plain text
    with pytest.raises(grpc.RpcError):
        _health(mtls_text.address, grpc.ssl_channel_credentials((certs / "ca.pem").read_bytes()))   # TLS, no cert
    assert "with mutual TLS" in mtls_text.log.read_text()


def gateway(certs, text_address, tmp_path, **env) -> Proc:
    port = free_port()
    proc = Proc("omniforge_gateway.app", {
        "OMNIFORGE_GATEWAY_PORT": str(port), "OMNIFORGE_GATEWAY_HOST": "127.0.0.1",
        "OMNIFORGE_GATEWAY_TEXT_ADDRESS": text_address, "OMNIFORGE_GATEWAY_FUSION_ADDRESS": "",
        "OMNIFORGE_GATEWAY_IMAGE_ADDRESS": "", "OMNIFORGE_GATEWAY_AUDIO_ADDRESS": "",
        "OMNIFORGE_GATEWAY_TLS_CERT": str(certs / "server.pem"), "OMNIFORGE_GATEWAY_TLS_KEY": str(certs / "server.key"),
        "OMNIFORGE_GATEWAY_GRPC_CA": str(certs / "ca.pem"), **env}, tmp_path / f"gateway-{port}.log").start()
    proc.url = f"https://localhost:{port}"
    return proc


def test_https_to_the_gateway_and_mutual_tls_to_the_service(mtls_text, certs, tmp_path):
    gw = gateway(certs, mtls_text.address, tmp_path, OMNIFORGE_GATEWAY_GRPC_CLIENT_CERT=str(certs / "client.pem"),
                 OMNIFORGE_GATEWAY_GRPC_CLIENT_KEY=str(certs / "client.key"))
    try:
        ca = str(certs / "ca.pem")
        wait_for(lambda: _ready(gw.url, ca), timeout=60, what=f"gateway over HTTPS ({gw.log})")
        r = httpx.post(f"{gw.url}/generate", json={"prompt": "HAMLET:\n", "max_tokens": 5}, verify=ca, timeout=30)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 5
        with pytest.raises(httpx.HTTPError):                 # plain HTTP on the HTTPS port
            httpx.get(gw.url.replace("https", "http") + "/healthz", timeout=5)
    finally:
        gw.stop()


def test_a_gateway_without_the_client_certificate_is_refused_by_the_service(mtls_text, certs, tmp_path):
    gw = gateway(certs, mtls_text.address, tmp_path)
    try:
        ca = str(certs / "ca.pem")
        wait_for(lambda: _answers(gw.url, ca), timeout=60, what=f"gateway over HTTPS ({gw.log})")
        ready = httpx.get(f"{gw.url}/readyz", verify=ca, timeout=10)
        assert ready.status_code == 503 and ready.json()["services"]["text"]["status"] != "SERVING"
        assert httpx.post(f"{gw.url}/generate", json={"prompt": "x", "max_tokens": 2}, verify=ca,
                          timeout=30).status_code == 503
    finally:
        gw.stop()


def _answers(url, ca) -> bool:
    try:
        return httpx.get(f"{url}/healthz", verify=ca, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _ready(url, ca) -> bool:
    try:
        return httpx.get(f"{url}/readyz", verify=ca, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
