import json

import numpy as np
import pytest

from omniforge_shared.bundle import load_bundle
from omniforge_training.export_onnx import PARITY_TOLERANCE, check_parity, export_bundle, load_trained


def test_bundle_graph_matches_torch_and_verifies(tiny_run, tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    model, _ = load_trained(tiny_run)
    assert check_parity(model, bundle.file("model")) < PARITY_TOLERANCE
    m = bundle.manifest
    assert m["metrics"]["onnx_parity_max_abs"] < PARITY_TOLERANCE
    assert m["graph"]["inputs"][:2] == ["input_ids", "lengths"] and m["graph"]["format"] == "gqa-kv-1"
    assert "past_key_values.0.key" in m["graph"]["inputs"] and "present.1.value" in m["graph"]["outputs"]
    assert m["training"]["tokens_seen"] > 0 and m["data"]["files"][0]["sha256"]


def test_int8_graph_reports_its_perplexity_change(tiny_run, tmp_path, corpus):
    from omniforge_shared.tokenizer import load_tokenizer
    tokens = np.array(load_tokenizer(tiny_run / "tokenizer.json").encode(corpus.read_text()[-5000:]))
    bundle = export_bundle(tiny_run, tmp_path, name="tiny", version="2", int8=True, eval_tokens=tokens,
                           log=lambda m: None)
    metrics = bundle.manifest["metrics"]
    assert bundle.has("model-int8")
    assert abs(metrics["int8_perplexity_change_pct"]) < 10
    assert metrics["onnx_int8_perplexity"] == pytest.approx(
        metrics["onnx_fp32_perplexity"] * (1 + metrics["int8_perplexity_change_pct"] / 100), rel=1e-3)


@pytest.mark.parametrize("variant", [dict(rope=False), dict(bias=False), dict(rope=False, bias=False)])
def test_graph_matches_torch_for_every_model_variant(variant, tmp_path):
    """Learned positions instead of rotary, no biases: the written-out graph follows the config."""
    import torch

    from omniforge_training.export_onnx import export_graph
    from omniforge_training.models.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=16, **variant)).eval()
    with torch.no_grad():   # non-trivial biases and norms, so a dropped one would show
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    export_graph(model, tmp_path / "m.onnx")
    assert check_parity(model, tmp_path / "m.onnx") < PARITY_TOLERANCE


def test_a_bundle_with_an_older_graph_format_is_refused_with_a_way_out(tiny_bundle, tmp_path):
    import shutil

    from omniforge_shared.backends import load_decoder
    from omniforge_shared.backends.base import IncompatibleBundle
    old = tmp_path / "old"
    shutil.copytree(tiny_bundle, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["graph"]["format"]             # as bundles of the previous graph interface were
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IncompatibleBundle, match="omniforge export onnx"):
        load_decoder(load_bundle(old))
