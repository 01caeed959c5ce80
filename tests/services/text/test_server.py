"""The text service as a real gRPC server process."""
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from omniforge_proto.v1 import common_pb2, text_pb2, text_pb2_grpc


@pytest.fixture(scope="module")
def stub(text_service):
    channel = grpc.insecure_channel(text_service.address)
    yield text_pb2_grpc.TextServiceStub(channel)
    channel.close()


def request(prompt="HAMLET:\n", **sampling):
    sampling = {"max_tokens": 20, "temperature": 0.8, **sampling}
    return text_pb2.GenerateRequest(prompt=prompt, sampling=text_pb2.SamplingParams(**sampling))


def test_generate_and_stream_agree_for_the_same_seed(stub):
    reply = stub.Generate(request(seed=42))
    chunks = list(stub.GenerateStream(request(seed=42)))
    assert reply.text == "".join(c.text for c in chunks)
    assert reply.finish_reason == chunks[-1].finish_reason == "length"
    assert reply.usage.completion_tokens == chunks[-1].usage.completion_tokens == 20
    assert reply.model == "tiny" and reply.model_version == "1"


def test_a_stream_arrives_in_several_messages(stub):
    # pieces merge while the reader lags (a loaded machine can merge a short stream into one
    # message), so a longer generation is read a few times: one of them must come in pieces
    counts = []
    for seed in range(3):
        counts.append(len(list(stub.GenerateStream(request(seed=seed, max_tokens=50)))))
        if counts[-1] > 1:
            break
    assert max(counts) > 1, counts


def test_score_returns_log_likelihood_and_perplexity(stub):
    import math

    reply = stub.Score(text_pb2.ScoreRequest(text="To be, or not to be"))
    assert reply.num_tokens == len("To be, or not to be") - 1
    assert reply.perplexity == pytest.approx(math.exp(-reply.log_likelihood / reply.num_tokens))


def test_errors_map_to_grpc_status_codes(stub):
    with pytest.raises(grpc.RpcError) as e:
        stub.Generate(request(max_tokens=0))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        stub.Generate(text_pb2.GenerateRequest(model=common_pb2.ModelRef(name="nope"), prompt="x"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and "available: tiny" in e.value.details()


def test_deadlines_are_honoured(stub):
    with pytest.raises(grpc.RpcError) as e:
        stub.Generate(request(max_tokens=60, prompt="a"), timeout=0.001)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert stub.Generate(request(max_tokens=3)).usage.completion_tokens == 3   # and the service is fine


def test_health_and_reflection(text_service):
    with grpc.insecure_channel(text_service.address) as ch:
        health = health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="omniforge.v1.TextService"))
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        replies = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for r in replies for s in r.list_services_response.service}
        assert "omniforge.v1.TextService" in names


def test_list_models_describes_the_bundle(stub):
    (model,) = stub.ListModels(common_pb2.ListModelsRequest()).models
    assert (model.name, model.task, model.backend, model.context_length) == ("tiny", "text-generation",
                                                                            "onnxruntime", 64)
    assert model.metrics["val_loss"] > 0


def test_sigterm_stops_gracefully(tiny_bundle, tmp_path):
    from support import Proc, free_port, grpc_serving, wait_for

    port = free_port()
    proc = Proc("omniforge_text.server", {"OMNIFORGE_TEXT_BUNDLE": str(tiny_bundle), "OMNIFORGE_TEXT_PORT": str(port),
                                          "OMNIFORGE_TEXT_GRACE_SECONDS": "1"}, tmp_path / "log").start()
    wait_for(lambda: grpc_serving(f"127.0.0.1:{port}"))
    assert proc.stop() == 0
    assert "stopping" in (tmp_path / "log").read_text()
