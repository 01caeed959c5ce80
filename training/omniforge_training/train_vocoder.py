"""Trains the Fourier-head vocoder on the audio of a speech dataset: log-mel of a random segment in,
the segment's waveform out.

Losses: L1 between log-mels of the output and the target (the HiFi-GAN weighting, x45) plus
multi-resolution STFT losses (spectral convergence + log-magnitude L1 at FFT sizes 512, 1024,
2048). No discriminator here: the adversarial phase wants a GPU window; the recipe takes
`adversarial_steps` for it and leaves it at 0 on CPU.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import atomic_write, load_weights, save_weights
from .data.audio_features import LogMel
from .data.speech import load_speech
from .data.tts_features import TTS_MEL
from .models.vocoder import Vocoder, VocoderConfig
from .loop import train_loop
from .schedule import warmup_cosine

RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))


@dataclass
class VocoderTrainConfig:
    data: str = ""
    out: str = "runs/vocoder"
    voices: list[str] = field(default_factory=list)     # empty: every training voice
    init: str = ""                     # start from this trained vocoder (a run or the starter's vocoder/)
    dim: int = 256
    intermediate: int = 768
    layers: int = 8
    segment_frames: int = 48
    batch_size: int = 16
    max_steps: int = 6000
    lr: float = 1e-3
    min_lr: float = 2e-5
    warmup_steps: int = 200
    eval_interval: int = 500
    checkpoint_interval: int = 100
    max_hours: float = 3.0             # how much audio to hold in memory
    seed: int = 1337
    threads: int = 2
    resume: bool = True


class STFTLoss(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        for n, _ in RESOLUTIONS:
            self.register_buffer(f"w{n}", torch.hann_window(n), persistent=False)

    def forward(self, y_hat, y):
        total = 0.0
        for n, hop in RESOLUTIONS:
            w = getattr(self, f"w{n}")
            a = torch.stft(y_hat, n, hop, window=w, return_complex=True).abs().clamp(min=1e-5)
            b = torch.stft(y, n, hop, window=w, return_complex=True).abs().clamp(min=1e-5)
            sc = torch.linalg.norm(b - a) / torch.linalg.norm(b).clamp(min=1e-5)
            total = total + sc + F.l1_loss(a.log(), b.log())
        return total / len(RESOLUTIONS)


def load_waves(ds, items: list[dict], cache: Path, *, log=print) -> tuple[np.ndarray, np.ndarray]:
    key = f"{ds.manifest['content_hash']}:{len(items)}"
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        if str(z["key"]) == key:
            return z["pcm"], z["offsets"]
    t0 = time.time()
    waves = [np.round(np.clip(ds.audio(it), -1, 1) * 32767).astype(np.int16) for it in items]
    offsets = np.concatenate([[0], np.cumsum([len(w) for w in waves])]).astype(np.int64)
    pcm = np.concatenate(waves)
    atomic_write(cache, lambda tmp: np.savez(open(tmp, "wb"), pcm=pcm, offsets=offsets, key=np.array(key)))
    log(f"{len(items)} utterances ({len(pcm) / ds.sample_rate / 3600:.2f} h) loaded in {time.time() - t0:.0f} s")
    return pcm, offsets


def segments(pcm, offsets, idx, rng: np.random.Generator, n: int) -> torch.Tensor:
    out = np.zeros((len(idx), n), np.float32)
    for k, i in enumerate(idx):
        a, b = int(offsets[i]), int(offsets[i + 1])
        if b - a > n:
            a = a + int(rng.integers(0, b - a - n))
        seg = pcm[a:min(b, a + n)].astype(np.float32) / 32767.0
        out[k, :len(seg)] = seg
    return torch.from_numpy(out)


def lr_at(step: int, cfg: VocoderTrainConfig) -> float:
    return warmup_cosine(step, lr=cfg.lr, min_lr=cfg.min_lr, warmup=cfg.warmup_steps, total=cfg.max_steps)


def train_vocoder(cfg: VocoderTrainConfig, *, on_step: Callable | None = None, log=print, progress: bool = True) -> dict:
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_speech(Path(cfg.data))
    if ds.sample_rate != TTS_MEL.sample_rate:
        raise ValueError(f"the vocoder trains at {TTS_MEL.sample_rate} Hz; {cfg.data} is at {ds.sample_rate} Hz")
    pick = lambda it: not cfg.voices or it["speaker"] in cfg.voices  # noqa: E731
    rng0 = np.random.default_rng(cfg.seed)
    train_items = [it for it in ds.split("train") if pick(it)]
    rng0.shuffle(train_items)
    budget, kept = cfg.max_hours * 3600, []
    for it in train_items:
        if budget <= 0:
            break
        kept.append(it)
        budget -= it["seconds"]
    val_items = [it for it in ds.split("val") if pick(it)][:32]
    if len(kept) < 2:
        raise ValueError(f"only {len(kept)} training utterances for the vocoder")
    pcm, offsets = load_waves(ds, kept, out / "cache" / "train.npz", log=log)
    vpcm, voffsets = load_waves(ds, val_items, out / "cache" / "val.npz", log=log) if val_items else (None, None)
    mcfg = VocoderConfig(dim=cfg.dim, intermediate=cfg.intermediate, layers=cfg.layers)
    mel = LogMel(TTS_MEL)
    stft_loss = STFTLoss()
    n = cfg.segment_frames * mcfg.hop
    if cfg.init:
        mcfg = VocoderConfig.from_dict(json.loads((Path(cfg.init) / "config.json").read_text())["model"])
    torch.manual_seed(cfg.seed)
    model = Vocoder(mcfg)
    if cfg.init and not (cfg.resume and (out / "checkpoints" / "last.pt").exists()):
        load_weights(Path(cfg.init) / "model.safetensors", model)
        log(f"starting from the weights in {cfg.init}")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.8, 0.99), weight_decay=0.0)

    def loss_of(y: torch.Tensor) -> torch.Tensor:
        m = mel(y)
        y_hat = model(m)
        m_hat = mel(y_hat)
        mel_l1 = F.l1_loss(m_hat, m[:, :m_hat.shape[1]])
        return 45 * mel_l1 + 2.5 * stft_loss(y_hat, y[:, :y_hat.shape[1]])

    n_items = len(offsets) - 1

    def step_loss(step: int):
        rng = np.random.default_rng([cfg.seed, step])
        return loss_of(segments(pcm, offsets, rng.integers(0, n_items, cfg.batch_size), rng, n)), cfg.batch_size

    result = train_loop(cfg=cfg, model=model, opt=opt, out=out, total=cfg.max_steps, lr_at=lambda s: lr_at(s, cfg),
                        step_loss=step_loss,
                        evaluate=lambda s: evaluate(model, vpcm, voffsets, mel, stft_loss) if vpcm is not None else {},
                        eval_interval=cfg.eval_interval, checkpoint_interval=cfg.checkpoint_interval, clip_norm=10.0,
                        desc="vocoder", on_step=on_step, log=log, progress=progress)
    step, wall, loss_ema, history = result.step, result.wall_s, result.loss_ema, result.history
    save_weights(out / "model.safetensors", model)
    (out / "config.json").write_text(json.dumps({"model": mcfg.to_dict(), "mel": TTS_MEL.to_dict(),
                                                 "train": asdict(cfg)}, indent=2))
    summary = {"recipe": "vocoder", "steps": step, "max_steps": cfg.max_steps, "wall_s": round(wall, 1),
               "params": sum(p.numel() for p in model.parameters()), "final_loss": loss_ema,
               "quality": evaluate(model, vpcm, voffsets, mel, stft_loss) if vpcm is not None else {},
               "history": history, "dataset": ds.manifest.get("name"), "dataset_hash": ds.manifest["content_hash"],
               "train_hours": round(len(pcm) / ds.sample_rate / 3600, 3), "config": asdict(cfg)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


@torch.no_grad()
def evaluate(model, pcm, offsets, mel, stft_loss) -> dict:
    """Whole validation utterances: log-mel L1 and multi-resolution STFT loss of the resynthesis."""
    model.eval()
    mel_l1, stft = [], []
    for i in range(len(offsets) - 1):
        y = torch.from_numpy(pcm[offsets[i]:offsets[i + 1]].astype(np.float32) / 32767.0)[None]
        y = y[:, :(y.shape[1] // 256) * 256]
        y_hat = model(mel(y))
        y = y[:, :y_hat.shape[1]]
        mel_l1.append(F.l1_loss(mel(y_hat), mel(y)).item())
        stft.append(stft_loss(y_hat, y).item())
    return {"val_mel_l1": float(np.mean(mel_l1)), "val_stft": float(np.mean(stft))}
