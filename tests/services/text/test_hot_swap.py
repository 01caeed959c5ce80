"""A promotion reaches a running text service, which swaps models while requests keep flowing."""
import threading
import time

import grpc
import pytest

from omniforge_proto.v1 import common_pb2, text_pb2, text_pb2_grpc
from support import Proc, free_port, grpc_serving, redis_answers, wait_for

REDIS_URL = "redis://127.0.0.1:6379/14"


@pytest.fixture()
def registry_home(tmp_path, tiny_run, tiny_bundle):
    from omniforge_shared.artifacts import LocalArtifactStore
    from omniforge_shared.registry import Registry
    from omniforge_training.export_onnx import export_bundle

    registry = Registry(f"sqlite:///{tmp_path / 'registry.db'}", LocalArtifactStore(tmp_path / "artifacts"))
    registry.upgrade()
    registry.register_bundle(tiny_bundle, stage="production")
    v2 = export_bundle(tiny_run, tmp_path / "v2", name="tiny", version="2", log=lambda m: None)
    registry.register_bundle(v2.path)
    yield tmp_path, registry
    registry.close()


@pytest.mark.parametrize("notify", ["polling", "redis"])
def test_requests_during_a_swap_see_no_error(registry_home, notify):
    home, registry = registry_home
    env = {"OMNIFORGE_HOME": str(home), "OMNIFORGE_TEXT_THREADS": "1", "OMNIFORGE_TEXT_GRACE_SECONDS": "1"}
    if notify == "redis":
        if not redis_answers(REDIS_URL):
            pytest.skip("Redis does not answer on 127.0.0.1:6379")
        from omniforge_shared.events import RedisEvents

        registry.on_stage_change.append(RedisEvents(REDIS_URL).publish_stage_change)
        env.update(OMNIFORGE_REDIS_URL=REDIS_URL, OMNIFORGE_TEXT_POLL_SECONDS="0")
    else:
        env.update(OMNIFORGE_TEXT_POLL_SECONDS="0.5")
    port = free_port()
    env["OMNIFORGE_TEXT_PORT"] = str(port)
    service = Proc("omniforge_text.server", env, home / "text.log").start()
    address = f"127.0.0.1:{port}"
    wait_for(lambda: grpc_serving(address), what="text service")
    results, errors, stop = [], [], threading.Event()

    def client_loop(i):
        with grpc.insecure_channel(address) as ch:
            stub = text_pb2_grpc.TextServiceStub(ch)
            while not stop.is_set():
                req = text_pb2.GenerateRequest(prompt="HAMLET:\n", sampling=text_pb2.SamplingParams(
                    max_tokens=30, temperature=0.8, seed=i))
                try:
                    if i % 2:
                        reply = stub.Generate(req, timeout=10)
                        results.append((time.time(), reply.model_version))
                    else:
                        chunks = list(stub.GenerateStream(req, timeout=10))
                        results.append((time.time(), chunks[-1].model_version))
                except grpc.RpcError as e:
                    errors.append(f"{e.code()}: {e.details()}")

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(4)]
    try:
        for t in threads:
            t.start()
        wait_for(lambda: len(results) > 20, what="traffic")
        promoted_at = time.time()
        registry.set_stage("tiny", "2", "production")
        wait_for(lambda: any(v == "2" for _, v in results), timeout=15, what="the new version to serve")
        swapped_after = min(t for t, v in results if v == "2") - promoted_at
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
        service.stop()
    assert errors == []
    versions = [v for _, v in results]
    assert "1" in versions and versions[-10:] == ["2"] * 10
    with_log = (home / "text.log").read_text()
    assert "now serving tiny:2" in with_log
    print(f"{notify}: {len(results)} requests, swap visible {swapped_after:.2f}s after promotion, 0 errors")
