"""Trains the FastSpeech-style acoustic model on the voices of a speech dataset that have
durations (the Piper teacher's alignments, mapped onto our phonemiser's ids).

    1. per utterance (cached by dataset hash): our phoneme ids, durations, log-mel, per-phoneme
       log-F0 and energy (`data/tts_features.py`)
    2. batches of similar frame counts; order a pure function of (seed, epoch)
    3. loss: L1 on the mel + MSE on log(1 + duration), standardised pitch and energy
    4. every `eval_interval` steps: validation mel L1 (teacher-forced) and duration error
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from omniforge_shared.audio import mel_filterbank
from omniforge_shared.phonemes import SYMBOLS, ids as symbol_ids, phonemise

from .checkpoint import atomic_write, save_weights
from .data.speech import load_speech
from .data.tts_features import TTS_MEL, align_durations, utterance_features
from .models.fastspeech import FastSpeech, TTSConfig
from .loop import train_loop
from .schedule import bucket_at, length_buckets, warmup_cosine


@dataclass
class TTSTrainConfig:
    data: str = ""
    out: str = "runs/tts"
    voices: list[str] = field(default_factory=lambda: ["joe"])
    teacher_ids: str = ""              # JSON symbol -> [id] map of the teacher voice (the Piper voice config)
    d_model: int = 192
    enc_layers: int = 4
    dec_layers: int = 4
    ff_dim: int = 768
    max_steps: int = 4000
    batch_frames: int = 6000
    lr: float = 1e-3
    min_lr: float = 2e-5
    warmup_steps: int = 200
    weight_decay: float = 1e-2
    eval_interval: int = 250
    checkpoint_interval: int = 100
    seed: int = 1337
    threads: int = 2
    resume: bool = True


def our_ids(spoken: str) -> list[int]:
    out: list[int] = []
    for sentence in phonemise(spoken):
        out += symbol_ids(sentence)
    return out


def build_features(ds, items: list[dict], id_to_symbol: dict[int, str], cache: Path, *, log=print,
                   progress: bool = True) -> list[dict]:
    key = f"{ds.manifest['content_hash']}:{len(items)}"
    if cache.exists():
        data = torch.load(cache, weights_only=False)
        if data["key"] == key:
            return data["rows"]
    t0 = time.time()
    fbank = mel_filterbank(TTS_MEL)
    rows, it = [], items
    if progress:
        from tqdm import tqdm
        it = tqdm(items, desc=f"tts features {cache.stem}", unit="utt")
    for item in it:
        ids = our_ids(item["spoken"])
        teacher = [id_to_symbol.get(int(i), "_") for i in item["phoneme_ids"]]
        durations = align_durations(teacher, item["durations"], [SYMBOLS[i] for i in ids])
        x = ds.audio(item)
        feats = utterance_features(x, durations, fbank)
        rows.append({"id": item["id"], "speaker": item["speaker"], "ids": np.array(ids, np.int16),
                     "durations": np.array(durations, np.int16), **feats})
    atomic_write(cache, lambda tmp: torch.save({"key": key, "rows": rows}, tmp))
    log(f"tts features of {len(rows)} utterances in {time.time() - t0:.0f} s")
    return rows


def collate(rows: list[dict], speakers: dict[str, int], cfg: TTSConfig) -> dict:
    b = len(rows)
    n = max(len(r["ids"]) for r in rows)
    t = max(len(r["mel"]) for r in rows)
    out = {"ids": torch.zeros(b, n, dtype=torch.long), "lengths": torch.tensor([len(r["ids"]) for r in rows]),
           "speaker": torch.tensor([speakers[r["speaker"]] for r in rows]),
           "durations": torch.zeros(b, n, dtype=torch.long), "pitch": torch.zeros(b, n), "energy": torch.zeros(b, n),
           "voiced": torch.zeros(b, n, dtype=torch.bool), "mel": torch.zeros(b, t, cfg.n_mels),
           "mel_lengths": torch.tensor([len(r["mel"]) for r in rows])}
    for i, r in enumerate(rows):
        k, m = len(r["ids"]), len(r["mel"])
        out["ids"][i, :k] = torch.from_numpy(r["ids"].astype(np.int64))
        out["durations"][i, :k] = torch.from_numpy(r["durations"].astype(np.int64))
        out["pitch"][i, :k] = torch.from_numpy((r["pitch"] - cfg.pitch_mean) / cfg.pitch_std) * torch.from_numpy(r["voiced"])
        out["energy"][i, :k] = torch.from_numpy((r["energy"] - cfg.energy_mean) / cfg.energy_std)
        out["voiced"][i, :k] = torch.from_numpy(r["voiced"])
        out["mel"][i, :m] = torch.from_numpy(r["mel"].astype(np.float32))
    return out


def losses(model: FastSpeech, batch: dict) -> dict:
    mel_hat, logd, pitch, energy = model(batch["ids"], batch["lengths"], batch["speaker"], batch["durations"],
                                         batch["pitch"], batch["energy"], batch["mel_lengths"])
    t = batch["mel"].shape[1]
    fmask = (torch.arange(t)[None, :] < batch["mel_lengths"][:, None]).float()[..., None]
    pmask = (torch.arange(batch["ids"].shape[1])[None, :] < batch["lengths"][:, None]).float()
    mel = (torch.abs(mel_hat - batch["mel"]) * fmask).sum() / (fmask.sum() * mel_hat.shape[-1])
    dur = (((logd - torch.log1p(batch["durations"].float())) ** 2) * pmask).sum() / pmask.sum()
    pit = (((pitch - batch["pitch"]) ** 2) * pmask).sum() / pmask.sum()
    ene = (((energy - batch["energy"]) ** 2) * pmask).sum() / pmask.sum()
    return {"loss": mel + dur + 0.5 * pit + 0.5 * ene, "mel_l1": mel, "duration_mse": dur, "pitch_mse": pit,
            "energy_mse": ene}


def lr_at(step: int, cfg: TTSTrainConfig) -> float:
    return warmup_cosine(step, lr=cfg.lr, min_lr=cfg.min_lr, warmup=cfg.warmup_steps, total=cfg.max_steps)


def load_teacher_map(path: str) -> dict[int, str]:
    if not path:
        from .data.starter_speech import piper_config

        mapping = piper_config()["phoneme_id_map"]
    else:
        mapping = json.loads(Path(path).read_text())
        mapping = mapping.get("phoneme_id_map", mapping)
    return {int(v[0]): k for k, v in mapping.items()}


def train_tts(cfg: TTSTrainConfig, *, on_step: Callable | None = None, log=print, progress: bool = True) -> dict:
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_speech(Path(cfg.data))
    has = lambda it: it["speaker"] in cfg.voices and it.get("durations") and it.get("spoken")  # noqa: E731
    train_items = [it for it in ds.split("train") if has(it)]
    val_items = [it for it in ds.split("val") if has(it)][:100]
    if len(train_items) < 4:
        raise ValueError(f"only {len(train_items)} training utterances with durations for voices {cfg.voices}")
    id_to_symbol = load_teacher_map(cfg.teacher_ids)
    train = build_features(ds, train_items, id_to_symbol, out / "cache" / "train.pt", log=log, progress=progress)
    val = build_features(ds, val_items, id_to_symbol, out / "cache" / "val.pt", log=log, progress=progress)
    voiced = np.concatenate([r["pitch"][r["voiced"]] for r in train])
    energy = np.concatenate([r["energy"] for r in train])
    speakers = {v: i for i, v in enumerate(cfg.voices)}
    mcfg = TTSConfig(n_symbols=len(SYMBOLS), n_speakers=len(cfg.voices), d_model=cfg.d_model, enc_layers=cfg.enc_layers,
                     dec_layers=cfg.dec_layers, ff_dim=cfg.ff_dim, pitch_mean=float(voiced.mean()),
                     pitch_std=float(voiced.std() + 1e-5), energy_mean=float(energy.mean()),
                     energy_std=float(energy.std() + 1e-5))
    batches = length_buckets([len(r["mel"]) for r in train], cfg.batch_frames)
    torch.manual_seed(cfg.seed)
    model = FastSpeech(mcfg)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))

    def step_loss(step: int):
        idx = bucket_at(batches, step=step, seed=cfg.seed)
        return losses(model, collate([train[int(i)] for i in idx], speakers, mcfg))["loss"], len(idx)

    result = train_loop(cfg=cfg, model=model, opt=opt, out=out, total=cfg.max_steps, lr_at=lambda s: lr_at(s, cfg),
                        step_loss=step_loss, evaluate=lambda s: evaluate(model, val, speakers, mcfg) if val else {},
                        eval_interval=cfg.eval_interval, checkpoint_interval=cfg.checkpoint_interval, clip_norm=1.0,
                        desc="tts", on_step=on_step, log=log, progress=progress)
    step, wall, loss_ema, history = result.step, result.wall_s, result.loss_ema, result.history
    save_weights(out / "model.safetensors", model)
    (out / "config.json").write_text(json.dumps({"model": mcfg.to_dict(), "speakers": cfg.voices,
                                                 "mel": TTS_MEL.to_dict(), "train": asdict(cfg)}, indent=2))
    summary = {"recipe": "tts", "steps": step, "max_steps": cfg.max_steps, "wall_s": round(wall, 1),
               "params": sum(p.numel() for p in model.parameters()), "final_loss": loss_ema,
               "quality": evaluate(model, val, speakers, mcfg) if val else {}, "history": history,
               "dataset": ds.manifest.get("name"), "dataset_hash": ds.manifest["content_hash"],
               "train_utterances": len(train), "config": asdict(cfg)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


@torch.no_grad()
def evaluate(model: FastSpeech, rows: list[dict], speakers: dict, cfg: TTSConfig) -> dict:
    """Teacher-forced mel L1, and the predicted durations' error in frames per phoneme and in total."""
    model.eval()
    sums = {"val_mel_l1": 0.0, "val_duration_mse": 0.0}
    abs_err, total_err = [], []
    for i in range(0, len(rows), 16):
        batch = collate(rows[i:i + 16], speakers, cfg)
        parts = losses(model, batch)
        sums["val_mel_l1"] += parts["mel_l1"].item() * len(rows[i:i + 16])
        sums["val_duration_mse"] += parts["duration_mse"].item() * len(rows[i:i + 16])
        _, logd, _, _ = model.encode(batch["ids"], batch["lengths"], batch["speaker"])
        pred = torch.clamp(torch.round(torch.expm1(logd)), min=0)
        for k in range(len(batch["ids"])):
            n = int(batch["lengths"][k])
            abs_err.append((pred[k, :n] - batch["durations"][k, :n]).abs().mean().item())
            total_err.append(abs(pred[k, :n].sum().item() / max(1, batch["durations"][k, :n].sum().item()) - 1))
    n = max(1, len(rows))
    return {**{k: v / n for k, v in sums.items()}, "val_duration_abs_frames": float(np.mean(abs_err)),
            "val_length_rel_error": float(np.mean(total_err))}
