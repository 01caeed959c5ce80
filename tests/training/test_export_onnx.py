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
    assert m["graph"]["inputs"][:3] == ["input_ids", "position_ids", "attention_mask"]
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
