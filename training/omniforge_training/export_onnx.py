"""Exports a trained GPT to an ONNX decoder graph with a KV cache, checks it, and bundles it.

The graph is written op by op from the weights rather than traced: attention is
onnxruntime's fused `com.microsoft.GroupQueryAttention` (rotary embedding inside, causal,
per-row lengths), so one graph serves batched right-padded prefills and decode steps, and
its cache can be bound in place (past and present the same buffer: nothing is copied per
step). Interface (`DecoderBackend` in omniforge_shared.backends.base):

  inputs   input_ids (B, S) int64; lengths (B,) int32 = each row's length after this step;
           past_key_values.{i}.key/value (B, nh, P, hs)
  outputs  logits (B, S, V); present.{i}.key/value (B, nh, P', hs)

P is the cache's capacity when bound in place (P' == P), else the longest row's past length
(P' = max(lengths)).
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

from omniforge_shared.backends.base import GRAPH_FORMAT, DecoderSpec, KVCache, cache_io_names
from omniforge_shared.bundle import Bundle, write_bundle
from omniforge_shared.chat import DEFAULT_STOP, DEFAULT_TEMPLATE
from omniforge_shared.tokenizer import load_tokenizer

from .checkpoint import load_weights
from .models.gpt import GPT, GPTConfig

PARITY_TOLERANCE = 1e-3
OPSET = 17


def io_names(n_layer: int) -> tuple[list[str], list[str]]:
    past, present = zip(*cache_io_names(n_layer))
    return ["input_ids", "lengths", *past], ["logits", *present]


def load_trained(run_dir: Path) -> tuple[GPT, dict]:
    """Model and config.json of a training run (or of a committed starter model)."""
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    model = GPT(GPTConfig(**config["model"]))
    load_weights(run_dir / "model.safetensors", model)
    return model.eval(), config


class _GraphBuilder:
    def __init__(self) -> None:
        self.nodes, self.initializers = [], []

    def const(self, name: str, value) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str | list[str], domain: str = "", **attrs):
        from onnx import helper

        outputs = [output] if isinstance(output, str) else output
        self.nodes.append(helper.make_node(op_type, inputs, outputs, domain=domain, **attrs))
        return output


def build_graph(model: GPT, *, embeds_input: bool = False):
    """The decoder as an onnx.ModelProto, from the model's weights. `embeds_input`: the graph
    takes `inputs_embeds` (B, S, C) float instead of `input_ids` (the captioner's decoder, whose
    prefix is an image; its engine looks token embeddings up itself)."""
    from onnx import TensorProto, helper

    cfg = model.config
    nh, hs, V = cfg.n_head, cfg.head_size, cfg.vocab_size
    w = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    g = _GraphBuilder()

    def linear(x: str, prefix: str, out: str) -> str:
        y = g.op("MatMul", [x, g.const(prefix + ".weight", w[prefix + ".weight"].T)], out + "_mm")
        if prefix + ".bias" not in w:
            return g.op("Identity", [y], out)
        return g.op("Add", [y, g.const(prefix + ".bias", w[prefix + ".bias"])], out)

    def norm(x: str, prefix: str, out: str) -> str:
        inputs = [x, g.const(prefix + ".weight", w[prefix + ".weight"])]
        if prefix + ".bias" in w:
            inputs.append(g.const(prefix + ".bias", w[prefix + ".bias"]))
        return g.op("LayerNormalization", inputs, out, axis=-1, epsilon=1e-5)

    # the attention op's lengths: seqlens_k = length - 1 per row, total = the longest row
    seqlens_k = g.op("Sub", ["lengths", g.const("one_i32", np.array(1, np.int32))], "seqlens_k")
    total = g.op("ReduceMax", ["lengths"], "total_sequence_length", keepdims=0)
    first = "inputs_embeds" if embeds_input else "input_ids"
    if embeds_input:
        x = g.op("Identity", ["inputs_embeds"], "embeddings")
    else:
        x = g.op("Gather", [g.const("wte", w["transformer.wte.weight"]), "input_ids"], "embeddings")
    # the attention op rotates q and k itself when the head size is a multiple of 16
    fused_rotary = cfg.rope and hs % 16 == 0
    if cfg.rope:
        angles = np.arange(cfg.block_size)[:, None] / (cfg.rope_base ** (np.arange(0, hs, 2) / hs))[None]
        rotary = [g.const("rotary_cos", np.cos(angles).astype(np.float32)),
                  g.const("rotary_sin", np.sin(angles).astype(np.float32))]
    if not fused_rotary:
        # positions (B, S): a prefill starts at 0; a decode step's token sits at length - 1
        S = g.op("Gather", [g.op("Shape", [first], "ids_shape"), g.const("one_i64", np.array(1, np.int64))],
                 "S")
        steps = g.op("Range", [g.const("zero_i64", np.array(0, np.int64)), S, "one_i64"], "steps")
        is_decode = g.op("Equal", [S, "one_i64"], "is_decode")
        offset = g.op("Where", [is_decode, g.op("Cast", [seqlens_k], "seqlens_i64", to=TensorProto.INT64),
                                g.const("zeros_b", np.array([0], np.int64))], "offset")
        positions = g.op("Add", [g.op("Unsqueeze", [offset, "one_i64"], "offset_col"), steps], "positions")
    if not cfg.rope:
        x = g.op("Add", [x, g.op("Gather", [g.const("wpe", w["transformer.wpe.weight"]), positions], "pos_emb")],
                 "embeddings_pos")
    for i in range(cfg.n_layer):
        p = f"transformer.h.{i}"
        qkv = linear(norm(x, f"{p}.ln_1", f"ln1_{i}"), f"{p}.attn.c_attn", f"qkv_{i}")
        if fused_rotary:
            qkv_inputs = [qkv, "", "", f"past_key_values.{i}.key", f"past_key_values.{i}.value", seqlens_k, total,
                          *rotary]
        else:
            q, k, v = g.op("Split", [qkv], [f"q_{i}", f"k_{i}", f"v_{i}"], axis=-1)
            if cfg.rope:
                q, k = (g.op("RotaryEmbedding", [t, positions, *rotary], f"{t}_rot", domain="com.microsoft",
                             num_heads=nh, interleaved=0) for t in (q, k))
            qkv_inputs = [q, k, v, f"past_key_values.{i}.key", f"past_key_values.{i}.value", seqlens_k, total]
        att = g.op("GroupQueryAttention", qkv_inputs,
                   [f"attn_{i}", f"present.{i}.key", f"present.{i}.value"], domain="com.microsoft",
                   num_heads=nh, kv_num_heads=nh, do_rotary=int(fused_rotary), rotary_interleaved=0)[0]
        x = g.op("Add", [x, linear(att, f"{p}.attn.c_proj", f"attn_out_{i}")], f"resid_attn_{i}")
        h = linear(norm(x, f"{p}.ln_2", f"ln2_{i}"), f"{p}.mlp.c_fc", f"fc_{i}")
        h = g.op("Gelu", [h], f"gelu_{i}", domain="com.microsoft")
        x = g.op("Add", [x, linear(h, f"{p}.mlp.c_proj", f"mlp_out_{i}")], f"resid_mlp_{i}")
    x = norm(x, "transformer.ln_f", "ln_f")
    g.op("MatMul", [x, g.const("lm_head", w["lm_head.weight"].T)], "logits")

    inputs, outputs = io_names(cfg.n_layer)
    cache = lambda name, length: helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", nh, length, hs])
    graph = helper.make_graph(
        g.nodes, "omniforge-decoder",
        [helper.make_tensor_value_info("inputs_embeds", TensorProto.FLOAT, ["batch", "sequence", cfg.n_embd])
         if embeds_input else helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
         helper.make_tensor_value_info("lengths", TensorProto.INT32, ["batch"]),
         *[cache(n, "past_sequence") for n in inputs[2:]]],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", V]),
         *[cache(n, "present_sequence") for n in outputs[1:]]],
        g.initializers)
    return helper.make_model(graph, producer_name="omniforge",
                             opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)])


def export_graph(model: GPT, path: Path) -> None:
    import onnx

    onnx.save(build_graph(model), str(path))


def _ort_session(path: Path, threads: int = 0):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _spec(cfg: GPTConfig) -> DecoderSpec:
    return DecoderSpec(n_layer=cfg.n_layer, n_head=cfg.n_head, head_size=cfg.head_size,
                       vocab_size=cfg.vocab_size, context_length=cfg.block_size)


def check_parity(model: GPT, onnx_path: Path, *, seed: int = 0, steps: int = 4) -> float:
    """Max |logit difference| between torch and the graph as served (cache bound in place):
    a batched prefill of prompts of different lengths, then `steps` decode steps."""
    from omniforge_shared.backends.onnxruntime_backend import OnnxDecoder

    cfg = model.config
    rng = np.random.default_rng(seed)
    decoder = OnnxDecoder(onnx_path, _spec(cfg))
    cache = KVCache(decoder.spec, 3)
    T = min(8, cfg.block_size - steps)
    rows = [list(rng.integers(0, cfg.vocab_size, n)) for n in (T, max(1, T - 3), max(1, T - 5))]
    lengths = np.array([len(r) for r in rows], np.int32)
    ids = np.zeros((len(rows), T), np.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
    logits = decoder.forward(ids, lengths, cache, 0)
    worst = 0.0
    for step in range(steps + 1):
        with torch.no_grad():
            for i, r in enumerate(rows):
                ref = model(torch.tensor([r]))[0][0].numpy()
                got = logits[i, :len(r)] if step == 0 else logits[i, :1]
                want = ref if step == 0 else ref[-1:]
                worst = max(worst, float(np.abs(got - want).max()))
        if step == steps:
            break
        nxt = logits[np.arange(len(rows)), (lengths - 1) if step == 0 else 0].argmax(-1)
        for r, t in zip(rows, nxt):
            r.append(int(t))
        lengths = lengths + 1
        logits = decoder.forward(nxt[:, None].astype(np.int64), lengths, cache, 0)
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
        logits = sess.run(["logits"], dict(zip(inputs, [x, np.array([T], np.int32), *past])))[0][0]
        logits = logits - logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        nll -= float(logp[np.arange(T), y].sum())
        count += T
    return math.exp(nll / count)


def quantize_int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from onnx import TensorProto

    # shape inference cannot see through the com.microsoft attention op; its outputs are float
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": TensorProto.FLOAT})


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
        graph={"format": GRAPH_FORMAT, "inputs": inputs, "outputs": outputs, "context_length": cfg.block_size,
               "n_layer": cfg.n_layer, "n_head": cfg.n_head, "head_size": cfg.head_size},
        metrics=metrics,
        training={k: summary[k] for k in ("tokens_seen", "wall_s", "hardware", "iters", "tokens_per_s")
                  if k in summary} | {"config": config.get("train", {})},
        data=config.get("data", {}),
        code_version=code_version(),
        export_seconds=round(time.time() - t0, 1),
        # how /v1/chat/completions turns messages into this model's prompt
        **{"chat": {"template": DEFAULT_TEMPLATE, "stop": list(DEFAULT_STOP)}, **(extra or {})},
    )
    log(f"bundle {name}:{version} written to {out}")
    return bundle
