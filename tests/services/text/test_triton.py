"""The triton backend against a real Triton Inference Server (tritonserver from nvidia-pytriton)."""
import asyncio

import pytest

from omniforge_cli import triton_local
from support import free_port, wait_for

pytestmark = pytest.mark.skipif(not triton_local.available(),
                                reason="no local tritonserver: run `make triton-env`")


def test_repository_layout_and_config(tiny_bundle, tmp_path):
    from omniforge_training.export_triton import export_triton

    model_dir = export_triton(tiny_bundle, tmp_path, runtime="onnxruntime", kind="KIND_GPU", instances=2)
    config = (model_dir / "config.pbtxt").read_text()
    assert (model_dir / "1" / "model.onnx").exists()
    for needle in ('name: "tiny"', 'platform: "onnxruntime_onnx"', 'name: "input_ids"', "TYPE_INT64",
                   'name: "past_key_values.1.value"', "dims: [ 2, -1, 16 ]", 'name: "logits"', "dynamic_batching",
                   "kind: KIND_GPU", "count: 2",
                   "max_batch_size: 16"):
        assert needle in config, needle
    with pytest.raises(ValueError, match="KIND_GPU or KIND_CPU"):
        export_triton(tiny_bundle, tmp_path, kind="KIND_TPU")


def test_generation_through_triton_matches_onnxruntime(tiny_bundle, tmp_path):
    import tritonclient.grpc as grpcclient

    from omniforge_shared.backends import load_decoder
    from omniforge_shared.bundle import load_bundle
    from omniforge_shared.tokenizer import load_tokenizer
    from omniforge_text.engine import TextEngine
    from omniforge_text.sampling import SamplingParams
    from omniforge_training.export_triton import export_triton

    export_triton(tiny_bundle, tmp_path / "repo", runtime="python", kind="KIND_CPU")
    grpc_port = free_port()
    server = triton_local.start_tritonserver(tmp_path / "repo", tmp_path / "work", grpc_port=grpc_port,
                                             http_port=free_port(), log=tmp_path / "triton.log")
    try:
        url = f"127.0.0.1:{grpc_port}"
        wait_for(lambda: grpcclient.InferenceServerClient(url).is_model_ready("tiny"), timeout=60,
                 what=f"tritonserver (log {tmp_path / 'triton.log'})")
        bundle = load_bundle(tiny_bundle)
        tokenizer = load_tokenizer(bundle.file("tokenizer"))
        remote = TextEngine(load_decoder(bundle, backend="triton", triton_url=url), tokenizer)
        local = TextEngine(load_decoder(bundle, threads=1), tokenizer)

        async def text(engine, prompt, **kw):
            return "".join([p.text async for p in engine.generate(prompt, SamplingParams(**kw))])

        async def compare():
            for prompt in ("HAMLET:\n", "To be"):
                assert await text(remote, prompt, max_tokens=30, temperature=0) == \
                       await text(local, prompt, max_tokens=30, temperature=0)
            # a batch of concurrent sampled requests goes through Triton too
            outs = await asyncio.gather(*[text(remote, "HAMLET:\n", max_tokens=20, seed=s) for s in range(4)])
            assert len(set(outs)) > 1 and all(len(o) == 20 for o in outs)

        asyncio.run(compare())
        remote.stop()
        local.stop()
    finally:
        server.terminate()
        server.wait(30)
