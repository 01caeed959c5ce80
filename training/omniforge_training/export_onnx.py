"""Exports a trained GPT to an ONNX decoder graph with a KV cache, checks it, and bundles it.

Graph inputs: input_ids (B, T), position_ids (B, T), attention_mask (B, P + T) and
past_key_values.{i}.key/value (B, nh, P, hs); outputs: logits (B, T, V) and
present.{i}.key/value (B, nh, P + T, hs). Batch, T and P are dynamic; P may be 0.
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from omniforge_shared.bundle import Bundle, write_bundle
from omniforge_shared.tokenizer import load_tokenizer

from .checkpoint import load_weights
from .models.gpt import GPT, GPTConfig

PARITY_TOLERANCE = 1e-3


class DecoderWithCache(torch.nn.Module):
    """Flattens the cache into named tensors, the form an ONNX graph takes."""

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, position_ids, attention_mask, *past):
        pairs = [(past[2 * i], past[2 * i + 1]) for i in range(len(past) // 2)]
        logits, _, presents = self.model(input_ids, position_ids=position_ids,
                                         past_key_values=pairs, attention_mask=attention_mask)
        return (logits, *[t for kv in presents for t in kv])


def io_names(n_layer: int) -> tuple[list[str], list[str]]:
    past = [f"past_key_values.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]
    present = [f"present.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]
    return ["input_ids", "position_ids", "attention_mask", *past], ["logits", *present]


def load_trained(run_dir: Path) -> tuple[GPT, dict]:
    """Model and config.json of a training run (or of a committed starter model)."""
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    model = GPT(GPTConfig(**config["model"]))
    load_weights(run_dir / "model.safetensors", model)
    return model.eval(), config


def export_graph(model: GPT, path: Path, *, opset: int = 17) -> None:
    cfg = model.config
    inputs, outputs = io_names(cfg.n_layer)
    B, T, P = 2, 3, 4
    past = [torch.zeros(B, cfg.n_head, P, cfg.head_size) for _ in range(2 * cfg.n_layer)]
    args = (torch.zeros(B, T, dtype=torch.long), torch.arange(P, P + T).repeat(B, 1),
            torch.ones(B, P + T, dtype=torch.long), *past)
    dynamic = {"input_ids": {0: "batch", 1: "sequence"}, "position_ids": {0: "batch", 1: "sequence"},
               "attention_mask": {0: "batch", 1: "total_sequence"}, "logits": {0: "batch", 1: "sequence"}}
    for name in inputs[3:]:
        dynamic[name] = {0: "batch", 2: "past_sequence"}
    for name in outputs[1:]:
        dynamic[name] = {0: "batch", 2: "total_sequence"}
    with torch.no_grad():
        torch.onnx.export(DecoderWithCache(model), args, str(path), input_names=inputs,
                          output_names=outputs, dynamic_axes=dynamic, opset_version=opset,
                          dynamo=False)


def _ort_session(path: Path, threads: int = 0):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def check_parity(model: GPT, onnx_path: Path, *, seed: int = 0) -> float:
    """Max |logit difference| between torch and onnxruntime over a padded prefill and 4 cached steps."""
    cfg = model.config
    rng = np.random.default_rng(seed)
    sess = _ort_session(onnx_path)
    B, T = 2, min(8, cfg.block_size - 4)
    ids = rng.integers(0, cfg.vocab_size, (B, T))
    mask = np.ones((B, T), dtype=np.int64)
    mask[1, :3] = 0                                   # row 1 is left-padded by 3
    pos = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
    past = [np.zeros((B, cfg.n_head, 0, cfg.head_size), np.float32) for _ in range(2 * cfg.n_layer)]
    inputs, _ = io_names(cfg.n_layer)
    worst = 0.0
    torch_past = None
    for step in range(5):
        feed = dict(zip(inputs, [ids, pos, mask, *past]))
        ort_out = sess.run(None, feed)
        with torch.no_grad():
            logits, _, presents = model(torch.from_numpy(ids), position_ids=torch.from_numpy(pos),
                                        past_key_values=torch_past, attention_mask=torch.from_numpy(mask))
        real = mask[:, -ids.shape[1]:].astype(bool)   # padded positions' logits are never used
        worst = max(worst, float(np.abs(ort_out[0] - logits.numpy())[real].max()))
        torch_past = presents
        past = ort_out[1:]
        # 2. the next step feeds one token per row
        ids = ort_out[0][:, -1].argmax(-1)[:, None]
        pos = pos[:, -1:] + 1
        mask = np.concatenate([mask, np.ones((B, 1), np.int64)], axis=1)
    return worst


def onnx_perplexity(onnx_path: Path, tokens: np.ndarray, *, block_size: int, n_layer: int,
                    n_head: int, head_size: int, max_tokens: int = 20000) -> float:
    """Perplexity of `tokens` under the ONNX graph, in non-overlapping windows (no cache)."""
    sess = _ort_session(onnx_path)
    inputs, _ = io_names(n_layer)
    tokens = np.asarray(tokens[:max_tokens + 1], dtype=np.int64)
    nll, count = 0.0, 0
    for s in range(0, len(tokens) - 1, block_size):
        x = tokens[s:s + block_size][None]
        y = tokens[s + 1:s + 1 + x.shape[1]]
        x = x[:, :len(y)]
        T = x.shape[1]
        past = [np.zeros((1, n_head, 0, head_size), np.float32) for _ in range(2 * n_layer)]
        logits = sess.run(["logits"], dict(zip(inputs, [x, np.arange(T)[None], np.ones((1, T), np.int64), *past])))[0][0]
        logits = logits - logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        nll -= float(logp[np.arange(T), y].sum())
        count += T
    return math.exp(nll / count)


def quantize_int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)


def code_version() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def export_bundle(run_dir: Path, out: Path, *, name: str, version: str, int8: bool = False,
                  eval_tokens: np.ndarray | None = None, log=print, extra: dict | None = None) -> Bundle:
    """run_dir (model.safetensors, config.json, tokenizer.json[, summary.json]) -> a verified bundle."""
    t0 = time.time()
    run_dir, out = Path(run_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model, config = load_trained(run_dir)
    cfg = model.config
    # 1. graph, 2. parity against torch
    export_graph(model, out / "model.onnx")
    parity = check_parity(model, out / "model.onnx")
    log(f"onnx parity: max abs logit difference {parity:.2e} (tolerance {PARITY_TOLERANCE:g})")
    if not parity < PARITY_TOLERANCE:
        raise RuntimeError(f"exported graph differs from torch by {parity:.2e} >= {PARITY_TOLERANCE:g}")
    tokenizer = load_tokenizer(run_dir / "tokenizer.json")
    tokenizer.save(out / "tokenizer.json")
    # the torch backend (development) runs the same weights the graph was made from
    if run_dir.resolve() != out.resolve():
        shutil.copy2(run_dir / "model.safetensors", out / "model.safetensors")
        shutil.copy2(run_dir / "config.json", out / "config.json")
    files = {"model.onnx": "model", "tokenizer.json": "tokenizer",
             "model.safetensors": "weights", "config.json": "config"}
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    metrics = {k: summary[k] for k in ("val_loss", "val_perplexity", "train_loss", "base_val_loss") if k in summary}
    metrics["onnx_parity_max_abs"] = parity
    # 3. optional INT8 dynamic quantization, with its perplexity change
    if int8:
        quantize_int8(out / "model.onnx", out / "model.int8.onnx")
        files["model.int8.onnx"] = "model-int8"
        if eval_tokens is not None:
            dims = dict(block_size=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head, head_size=cfg.head_size)
            ppl_fp32 = onnx_perplexity(out / "model.onnx", eval_tokens, **dims)
            ppl_int8 = onnx_perplexity(out / "model.int8.onnx", eval_tokens, **dims)
            metrics.update(onnx_fp32_perplexity=round(ppl_fp32, 4), onnx_int8_perplexity=round(ppl_int8, 4),
                           int8_perplexity_change_pct=round(100 * (ppl_int8 / ppl_fp32 - 1), 3))
            log(f"int8: perplexity {ppl_fp32:.3f} -> {ppl_int8:.3f} "
                f"({metrics['int8_perplexity_change_pct']:+.2f}%)")
    inputs, outputs = io_names(cfg.n_layer)
    bundle = write_bundle(
        out, name=name, version=version, task="text-generation",
        architecture={"family": "gpt", "config": cfg.to_dict(), "params": model.num_params()},
        files=files,
        tokenizer={"kind": tokenizer.kind, "file": "tokenizer.json", "vocab_size": tokenizer.vocab_size,
                   "eos_id": tokenizer.eos_id},
        graph={"inputs": inputs, "outputs": outputs, "context_length": cfg.block_size,
               "n_layer": cfg.n_layer, "n_head": cfg.n_head, "head_size": cfg.head_size},
        metrics=metrics,
        training={k: summary[k] for k in ("tokens_seen", "wall_s", "hardware", "iters", "tokens_per_s")
                  if k in summary} | {"config": config.get("train", {})},
        data=config.get("data", {}),
        code_version=code_version(),
        export_seconds=round(time.time() - t0, 1),
        **(extra or {}),
    )
    log(f"bundle {name}:{version} written to {out}")
    return bundle
