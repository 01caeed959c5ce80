"""LoRA fine-tuning (peft) of a registered GPT text model on a user's corpus.

The result is a bundle of its own: the adapter (peft's adapter_config.json and
adapter_model.safetensors, a few hundred KB) plus an ONNX graph of the merged model, so it is
servable merged (onnxruntime, the default) or as an adapter on top of its base (torch backend).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from omniforge_shared.bundle import Bundle
from omniforge_shared.tokenizer import load_tokenizer

from .checkpoint import save_weights
from .data.ingest import read_documents
from .export_onnx import load_trained
from .train_text import StepReport, full_loss

TARGET_MODULES = ["c_attn", "c_proj", "c_fc"]


@dataclass
class LoraConfigSpec:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(TARGET_MODULES))
    block_size: int = 128
    batch_size: int = 8
    max_iters: int = 200
    lr: float = 1e-3
    val_fraction: float = 0.1
    seed: int = 1337
    threads: int = 0


def attach_lora(model: torch.nn.Module, spec: LoraConfigSpec):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                        target_modules=spec.target_modules, bias="none")
    return get_peft_model(model, config)


def _tokens(base: Bundle, data: Path) -> np.ndarray:
    tokenizer = load_tokenizer(base.file("tokenizer"))
    sep = tokenizer.eos_id
    ids: list[int] = []
    for doc in read_documents(data):
        ids.extend(tokenizer.encode(doc))
        ids.extend([sep] if sep is not None else tokenizer.encode("\n\n"))
    return np.array(ids, dtype=np.int64)


def finetune_lora(base: Bundle, data: Path, out: Path, spec: LoraConfigSpec, *,
                  on_step: Callable[[StepReport], bool | None] | None = None, log=print) -> dict:
    """Trains an adapter; writes adapter files, merged weights, config.json, tokenizer.json, summary.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    torch.manual_seed(spec.seed)
    model, config = load_trained(base.path)
    block = min(spec.block_size, model.config.block_size)
    tokens = _tokens(base, Path(data))
    cut = int(len(tokens) * (1 - spec.val_fraction))
    train, val = tokens[:cut], tokens[cut:]
    if len(train) <= block + 1 or len(val) < 2:
        raise ValueError(f"{data} is too small: {len(tokens)} tokens for block_size {block}")
    base_val = full_loss(model, val, block, torch.device("cpu"))
    peft_model = attach_lora(model, spec)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    log(f"LoRA r={spec.r} on {spec.target_modules}: {trainable:,} trainable of "
        f"{sum(p.numel() for p in peft_model.parameters()):,} parameters; base val loss {base_val:.4f}")
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=spec.lr,
                                  weight_decay=0.0)
    gen = torch.Generator().manual_seed(spec.seed)
    t0 = time.time()
    peft_model.train()
    stopped = False
    for it in range(1, spec.max_iters + 1):
        lr = spec.lr * 0.5 * (1 + math.cos(math.pi * (it - 1) / spec.max_iters))
        for group in optimizer.param_groups:
            group["lr"] = lr
        starts = torch.randint(len(train) - block - 1, (spec.batch_size,), generator=gen).numpy()
        rows = torch.from_numpy(np.stack([train[s:s + block + 1] for s in starts]))
        _, loss, _ = peft_model(rows[:, :-1], rows[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(peft_model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed = time.time() - t0
        report = StepReport(it, spec.max_iters, loss.item(), lr, it * spec.batch_size * block / elapsed,
                            (spec.max_iters - it) * elapsed / it)
        if on_step is not None and on_step(report) is False:
            stopped = True
            break
    peft_model.eval()
    # 1. the adapter on its own, in peft's format
    peft_model.save_pretrained(str(out / "adapter"), safe_serialization=True)
    # 2. the merged model: what onnxruntime serves
    merged = peft_model.merge_and_unload()
    val_loss = full_loss(merged, val, block, torch.device("cpu"))
    save_weights(out / "model.safetensors", merged)
    load_tokenizer(base.file("tokenizer")).save(out / "tokenizer.json")
    (out / "config.json").write_text(json.dumps({
        "model": merged.config.to_dict(), "train": {"recipe": "text-lora", **asdict(spec)},
        "data": {"files": [{"path": Path(data).name}], "base_model": f"{base.name}:{base.version}"}}, indent=2))
    summary = {"val_loss": round(val_loss, 5), "val_perplexity": round(math.exp(val_loss), 3),
               "base_val_loss": round(base_val, 5), "train_loss": round(loss.item(), 5), "iters": it,
               "stopped_early": stopped, "trainable_params": trainable, "val_tokens": int(len(val)),
               "tokens_seen": it * spec.batch_size * block, "wall_s": round(time.time() - t0, 1),
               "tokens_per_s": round(it * spec.batch_size * block / max(time.time() - t0, 1e-9), 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log(f"LoRA: val loss {base_val:.4f} -> {val_loss:.4f}")
    return summary


def add_adapter_files(bundle_dir: Path, run_dir: Path, base: Bundle) -> None:
    """Copies the adapter into an exported bundle and records its base."""
    import shutil

    from omniforge_shared.bundle import rewrite_manifest

    bundle_dir = Path(bundle_dir)
    for fname in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy2(Path(run_dir) / "adapter" / fname, bundle_dir / fname)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["base_model"] = {"name": base.name, "version": base.version,
                              "weights_sha256": base.manifest["files"]["model.safetensors"]["sha256"]}
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    rewrite_manifest(bundle_dir, add_files={"adapter_config.json": "adapter-config",
                                            "adapter_model.safetensors": "adapter"})


def load_with_adapter(adapter_bundle: Bundle, base_bundle: Bundle):
    """Base weights + the adapter, unmerged (how the torch backend serves an adapter)."""
    from peft import PeftModel

    expected = adapter_bundle.manifest["base_model"]["weights_sha256"]
    actual = base_bundle.manifest["files"]["model.safetensors"]["sha256"]
    if expected != actual:
        raise ValueError(f"adapter {adapter_bundle.name}:{adapter_bundle.version} was trained on other base weights "
                         f"than {base_bundle.name}:{base_bundle.version}")
    model, _ = load_trained(base_bundle.path)
    return PeftModel.from_pretrained(model, str(adapter_bundle.path)).eval()
