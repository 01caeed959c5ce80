"""Exports an audio tower run as an `audio-embedding` bundle: one ONNX graph from log-mel to a
unit vector in the shared space of the embedding model it was aligned to (`space` in the
manifest; the fusion service pairs the two and refuses audio for any other model)."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from omniforge_shared.audio import MelConfig, log_mel
from omniforge_shared.bundle import Bundle, write_bundle

from .checkpoint import load_weights
from .export_onnx import code_version
from .models.audio_tower import AudioTower, AudioTowerConfig

PARITY_TOLERANCE = 1e-4
TASK = "audio-embedding"


def load_audio_tower(run_dir: Path) -> tuple[AudioTower, dict]:
    cfg = json.loads((Path(run_dir) / "config.json").read_text())
    tower = AudioTower(AudioTowerConfig.from_dict(cfg["model"]))
    load_weights(Path(run_dir) / "model.safetensors", tower)
    return tower.eval(), cfg


def _flat(quality: dict) -> dict:
    out = {}
    for group in ("all", "heldout_voice", "training_voices"):
        for who, r in (quality.get(group) or {}).items():
            if isinstance(r, dict):
                out |= {f"{group}_{who}_{k}": v for k, v in r.items() if k in ("r1", "r5", "mean_cosine")}
    search = quality.get("spoken_image_search") or {}
    for who in ("spoken", "typed"):
        out |= {f"image_search_{who}_{k}": v for k, v in (search.get(who) or {}).items() if k in ("r1", "r5")}
    return out


def export_audio_tower_bundle(run_dir: Path, out: Path, *, name: str, version: str, log=print,
                              extra: dict | None = None) -> Bundle:
    import onnxruntime as ort

    t0 = time.time()
    run_dir, out = Path(run_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tower, cfg = load_audio_tower(run_dir)
    a = tower.config.asr
    mel = MelConfig(**cfg["mel"])
    rng = np.random.default_rng(0)
    feats = [log_mel(rng.standard_normal(n).astype(np.float32) * 0.1, mel) for n in (16_000, 9_000)]
    x = np.zeros((2, max(len(f) for f in feats), a.n_mels), np.float32)
    for i, f in enumerate(feats):
        x[i, :len(f)] = f
    lengths = np.array([len(f) for f in feats], np.int64)
    with torch.no_grad():
        torch.onnx.export(tower, (torch.from_numpy(x), torch.from_numpy(lengths)), str(out / "audio-encoder.onnx"),
                          input_names=["features", "lengths"], output_names=["audio_embeds"], opset_version=18,
                          dynamo=False, dynamic_axes={"features": {0: "batch", 1: "frames"}, "lengths": {0: "batch"},
                                                      "audio_embeds": {0: "batch"}})
        ref = tower(torch.from_numpy(x), torch.from_numpy(lengths)).numpy()
    got = ort.InferenceSession(str(out / "audio-encoder.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"features": x, "lengths": lengths})[0]
    parity = float(np.abs(got - ref).max())
    log(f"onnx parity: embeddings {parity:.1e} (tolerance {PARITY_TOLERANCE:g})")
    if not parity < PARITY_TOLERANCE:
        raise RuntimeError(f"exported audio tower differs from torch by {parity:.2e}")
    shutil.copy(run_dir / "model.safetensors", out / "model.safetensors")
    shutil.copy(run_dir / "config.json", out / "config.json")
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    bundle = write_bundle(
        out, name=name, version=version, task=TASK,
        architecture={"family": "conformer-audio-tower", "config": tower.config.to_dict(),
                      "params": sum(p.numel() for p in tower.parameters())},
        files={"audio-encoder.onnx": "audio-encoder", "model.safetensors": "weights", "config.json": "config"},
        space=cfg["space"], embedding={"dimensions": tower.config.embed_dim, "normalized": True},
        preprocess={"mel": mel.to_dict(), "sample_rate": a.sample_rate, "normalise_loudness": True},
        metrics=_flat(summary.get("quality", {})) | {"onnx_parity": parity},
        training={k: summary[k] for k in ("wall_s", "steps", "train_utterances", "sentences") if k in summary},
        data={"datasets": summary.get("datasets"), "content_hash": "+".join(summary.get("dataset_hashes") or [])},
        code_version=code_version(), export_seconds=round(time.time() - t0, 1), **(extra or {}))
    log(f"bundle {name}:{version} written to {out}")
    return bundle
