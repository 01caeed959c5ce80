"""Exports a trained captioner: the prefix encoder, the decoder with its KV cache, and the
token embeddings, checked against torch, bundled with the tokenizer.

  image_encoder.onnx   pixel_values (B, 3, S, S) -> prefix_embeds (B, P, C)   (CLIP ViT + mapper)
  decoder.onnx         inputs_embeds (B, S, C), lengths, past_key_values.* -> logits, present.*
                       (the text path's hand-built graph, fed embeddings instead of ids)
  token_embeddings.npy (V, C) float32: the engine looks tokens up itself, so a prompt and the
                       caption so far follow the image prefix in one sequence
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from omniforge_shared.backends.base import GRAPH_FORMAT, DecoderSpec, KVCache
from omniforge_shared.bundle import Bundle, write_bundle
from omniforge_shared.images import MEAN, STD, to_model_input

from .checkpoint import load_weights
from .export_clip import load_clip
from .export_onnx import build_graph, code_version, io_names
from .models.captioner import Captioner, CaptionerConfig

PARITY_TOLERANCE = 1e-3
TASK = "image-caption"


def load_captioner(run_dir: Path) -> Captioner:
    cfg = json.loads((Path(run_dir) / "config.json").read_text())
    model = Captioner(CaptionerConfig.from_dict(cfg["model"]))
    load_weights(Path(run_dir) / "model.safetensors", model)
    return model.eval()


class PrefixEncoder(nn.Module):
    """CLIP ViT (tokens and embedding) + the captioner's prefix mapper, as one graph."""

    def __init__(self, clip, captioner: Captioner) -> None:
        super().__init__()
        self.clip, self.mapper = clip, captioner.mapper

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        tokens = self.clip.vision.forward_tokens(pixel_values)
        emb = torch.nn.functional.normalize(self.clip.image_proj(tokens.mean(1)), dim=-1)
        return self.mapper(self.mapper.pool_tokens(tokens), emb)


def export_caption_bundle(run_dir: Path, clip_dir: Path, out: Path, *, name: str, version: str,
                          sample_images: np.ndarray, log=print, extra: dict | None = None) -> Bundle:
    import onnx
    import onnxruntime as ort

    from omniforge_shared.backends.onnxruntime_backend import OnnxDecoder
    from omniforge_shared.tokenizer import load_tokenizer

    from .train_caption import COLOUR_PROMPT

    t0 = time.time()
    run_dir, out = Path(run_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model, clip = load_captioner(run_dir), load_clip(Path(clip_dir))
    cfg = model.config
    dec = cfg.decoder
    # 1. prefix encoder
    pixels = torch.from_numpy(to_model_input(list(sample_images[:4]), cfg.vision.image_size))
    encoder = PrefixEncoder(clip, model).eval()
    with torch.no_grad():
        torch.onnx.export(encoder, (pixels,), str(out / "image_encoder.onnx"), input_names=["pixel_values"],
                          output_names=["prefix_embeds"], opset_version=18, dynamo=False,
                          dynamic_axes={"pixel_values": {0: "batch"}, "prefix_embeds": {0: "batch"}})
        prefix = encoder(pixels)
    sess = ort.InferenceSession(str(out / "image_encoder.onnx"), providers=["CPUExecutionProvider"])
    got_prefix = sess.run(None, {"pixel_values": pixels.numpy()})[0]
    prefix_parity = float(np.abs(got_prefix - prefix.numpy()).max())
    # 2. decoder graph on embeddings; 3. token embeddings
    onnx.save(build_graph(model.decoder, embeds_input=True), str(out / "decoder.onnx"))
    wte = model.decoder.transformer.wte.weight.detach().float().numpy()
    np.save(out / "token_embeddings.npy", wte)
    # parity: a prefill of the prefix, then greedy steps, against torch on the same sequence
    spec = DecoderSpec(n_layer=dec.n_layer, n_head=dec.n_head, head_size=dec.head_size, vocab_size=dec.vocab_size,
                       context_length=dec.block_size)
    decoder = OnnxDecoder(out / "decoder.onnx", spec, embed_dim=dec.n_embd)
    cache = KVCache(spec, len(got_prefix))
    P = got_prefix.shape[1]
    lengths = np.full(len(got_prefix), P, np.int32)
    logits = decoder.forward(got_prefix.astype(np.float32), lengths, cache, 0)[:, -1].copy()
    seq = torch.from_numpy(got_prefix)
    worst = 0.0
    for _ in range(6):
        with torch.no_grad():
            ref = model.decoder(inputs_embeds=seq)[0][:, -1].numpy()
        worst = max(worst, float(np.abs(ref - logits).max()))
        nxt = ref.argmax(-1)
        emb = wte[nxt][:, None]
        seq = torch.cat([seq, torch.from_numpy(emb)], dim=1)
        lengths = lengths + 1
        logits = decoder.forward(emb.astype(np.float32), lengths, cache, 0)[:, 0].copy()
    decoder.close()
    log(f"onnx parity: prefix {prefix_parity:.1e}, decoder logits {worst:.1e} (tolerance {PARITY_TOLERANCE:g})")
    if not max(prefix_parity, worst) < PARITY_TOLERANCE:
        raise RuntimeError(f"exported captioner differs from torch by {max(prefix_parity, worst):.2e}")
    tok = load_tokenizer(run_dir / "tokenizer.json")
    tok.save(out / "tokenizer.json")
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    metrics = {f"{split}_{k}": v for split, r in summary.get("quality", {}).items() for k, v in r.items()
               if isinstance(v, float)}
    metrics |= {"onnx_parity_prefix": prefix_parity, "onnx_parity_decoder": worst}
    inputs, outputs = io_names(dec.n_layer)
    bundle = write_bundle(
        out, name=name, version=version, task=TASK,
        architecture={"family": "captioner", "config": cfg.to_dict(),
                      "params": sum(p.numel() for p in model.parameters()) + sum(p.numel() for p in clip.vision.parameters())},
        files={"image_encoder.onnx": "image-encoder", "decoder.onnx": "decoder",
               "token_embeddings.npy": "token-embeddings", "tokenizer.json": "tokenizer"},
        preprocess={"image_size": cfg.vision.image_size, "mean": list(MEAN), "std": list(STD)},
        tokenizer={"kind": tok.kind, "file": "tokenizer.json", "vocab_size": tok.vocab_size, "eos_id": tok.eos_id},
        graph={"format": GRAPH_FORMAT, "inputs": ["inputs_embeds", *inputs[1:]], "outputs": outputs,
               "context_length": dec.block_size, "n_layer": dec.n_layer, "n_head": dec.n_head,
               "head_size": dec.head_size, "n_embd": dec.n_embd, "n_prefix": int(P)},
        prompts={"colours": COLOUR_PROMPT},
        metrics=metrics,
        training={k: summary[k] for k in ("wall_s", "steps") if k in summary},
        data={"dataset": summary.get("dataset"), "content_hash": summary.get("dataset_hash")},
        code_version=code_version(), export_seconds=round(time.time() - t0, 1), **(extra or {}))
    log(f"bundle {name}:{version} written to {out}")
    return bundle
