"""Trains the Fourier-head vocoder on the audio of a speech dataset: log-mel of a random segment in,
the segment's waveform out.

Losses: L1 between log-mels of the output and the target (the HiFi-GAN weighting, x45) plus
multi-resolution STFT losses (spectral convergence + log-magnitude L1 at FFT sizes 512, 1024,
2048). No discriminator here: the adversarial phase wants a GPU window.

`gta`: fine-tuning on an acoustic model's ground-truth-aligned mels. The acoustic model's mels
are smoother than a recording's; a vocoder that has only heard recordings' mels voices them
blurred. With `gta` set, part of every batch (`gta_share`) is the acoustic model's teacher-forced
mel of a training recording (its durations, pitch and energy; so frame k is still frame k of the
recording) in, and the recording's own waveform out: the vocoder learns to voice what the
acoustic model actually says.
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
    gta: str = ""                      # an acoustic model (run or the starter's acoustic/) to fine-tune on
    gta_share: float = 0.75            # the share of each batch that is its teacher-forced mels
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


def gta_mels(acoustic: Path, ds, items: list[dict], cache: Path, *, threads: int = 2, log=print,
             progress: bool = True) -> list[np.ndarray | None]:
    """The acoustic model's teacher-forced log-mels of `items`' recordings, frame for frame aligned
    with them (float16, (frames, n_mels)); None for an item it cannot time or whose voice it lacks."""
    from omniforge_shared.bundle import sha256_file

    from .models.fastspeech import FastSpeech, TTSConfig
    from .train_tts import build_features, collate, load_teacher_map

    acoustic = Path(acoustic)
    if not (acoustic / "config.json").exists() or not (acoustic / "model.safetensors").exists():
        raise ValueError(f"gta={acoustic}: expected an acoustic model (a `train tts` run or "
                         "training/omniforge_training/starter/tts/acoustic) with config.json and model.safetensors")
    key = f"{ds.manifest['content_hash']}:{len(items)}:{sha256_file(acoustic / 'model.safetensors')}"
    if cache.exists():
        data = torch.load(cache, weights_only=False)
        if data["key"] == key:
            return data["mels"]
    config = json.loads((acoustic / "config.json").read_text())
    mcfg = TTSConfig.from_dict(config["model"])
    model = FastSpeech(mcfg)
    load_weights(acoustic / "model.safetensors", model)
    model.eval()
    speakers = {v: i for i, v in enumerate(config.get("speakers") or ["joe"])}
    reference = config.get("train", {}).get("reference_voice") or next(iter(speakers))
    references = {it["spoken"]: it for it in ds.items
                  if it["speaker"] == reference and it.get("durations") and it.get("spoken")}
    timed = [k for k, it in enumerate(items) if it["speaker"] in speakers and it.get("spoken")
             and (it.get("durations") or it["spoken"] in references)]
    mels: list[np.ndarray | None] = [None] * len(items)
    if not timed:
        return mels
    t0 = time.time()
    train = config.get("train", {})
    rows = build_features(ds, [items[k] for k in timed], load_teacher_map(train.get("teacher_ids", "")),
                          cache.with_name(cache.stem + "-features.pt"), references=references, workers=threads,
                          flite=bool(train.get("flite_timing")), log=log, progress=progress)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["mel"]))
    with torch.no_grad():
        for i in range(0, len(order), 16):
            chunk = order[i:i + 16]
            batch = collate([rows[j] for j in chunk], speakers, mcfg)
            mel_hat = model(batch["ids"], batch["lengths"], batch["speaker"], batch["durations"], batch["pitch"],
                            batch["energy"], batch["mel_lengths"])[0]
            for k, j in enumerate(chunk):
                mels[timed[j]] = mel_hat[k, :int(batch["mel_lengths"][k])].numpy().astype(np.float16)
    atomic_write(cache, lambda tmp: torch.save({"key": key, "mels": mels}, tmp))
    log(f"teacher-forced mels of {len(timed)} of {len(items)} utterances in {time.time() - t0:.0f} s")
    return mels


def gta_segments(pcm, offsets, mels: list, idx, rng: np.random.Generator, frames: int,
                 hop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`frames + 1` teacher-forced mel frames of each item in idx and the `frames * hop` samples of
    its recording they stand for (mel frame k is centred on sample k * hop)."""
    mel = np.zeros((len(idx), frames + 1, mels[idx[0]].shape[1]), np.float32)
    wave = np.zeros((len(idx), frames * hop), np.float32)
    for k, i in enumerate(idx):
        a, b = int(offsets[i]), int(offsets[i + 1])
        usable = min(len(mels[i]), 1 + (b - a) // hop)
        f = int(rng.integers(0, usable - frames))
        mel[k] = mels[i][f:f + frames + 1]
        wave[k] = pcm[a + f * hop:a + (f + frames) * hop].astype(np.float32) / 32767.0
    return torch.from_numpy(mel), torch.from_numpy(wave)


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
    gta_items, vgta = np.zeros(0, np.int64), None
    if cfg.gta:
        if not 0.0 < cfg.gta_share <= 1.0:
            raise ValueError(f"gta_share={cfg.gta_share}: give the share of each batch in (0, 1]")
        gta = gta_mels(Path(cfg.gta), ds, kept, out / "cache" / "gta-train.pt", threads=cfg.threads, log=log,
                       progress=progress)
        # items with a teacher-forced mel at least a segment long
        gta_items = np.array([i for i, m in enumerate(gta) if m is not None
                              and min(len(m), 1 + (offsets[i + 1] - offsets[i]) // mcfg.hop) > cfg.segment_frames],
                             np.int64)
        if not len(gta_items):
            raise ValueError(f"gta={cfg.gta}: none of the vocoder's utterances is by a voice that acoustic model "
                             "speaks, with durations to teacher-force it")
        if val_items:
            vgta = gta_mels(Path(cfg.gta), ds, val_items, out / "cache" / "gta-val.pt", threads=cfg.threads, log=log,
                            progress=progress)
    torch.manual_seed(cfg.seed)
    model = Vocoder(mcfg)
    if cfg.init and not (cfg.resume and (out / "checkpoints" / "last.pt").exists()):
        load_weights(Path(cfg.init) / "model.safetensors", model)
        log(f"starting from the weights in {cfg.init}")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.8, 0.99), weight_decay=0.0)

    def loss_of(y: torch.Tensor, m_in: torch.Tensor | None = None) -> torch.Tensor:
        """The vocoder voices m_in (default: y's own log-mel); its output is scored against y."""
        m = mel(y)
        y_hat = model(m if m_in is None else m_in)
        m_hat = mel(y_hat)
        mel_l1 = F.l1_loss(m_hat, m[:, :m_hat.shape[1]])
        return 45 * mel_l1 + 2.5 * stft_loss(y_hat, y[:, :y_hat.shape[1]])

    n_items = len(offsets) - 1
    n_gta = int(round(cfg.batch_size * cfg.gta_share)) if len(gta_items) else 0

    def step_loss(step: int):
        rng = np.random.default_rng([cfg.seed, step])
        y = segments(pcm, offsets, rng.integers(0, n_items, cfg.batch_size - n_gta), rng, n)
        if not n_gta:
            return loss_of(y), cfg.batch_size
        m_gta, y_gta = gta_segments(pcm, offsets, gta, gta_items[rng.integers(0, len(gta_items), n_gta)], rng,
                                    cfg.segment_frames, mcfg.hop)
        m_in = torch.cat([mel(y), m_gta]) if len(y) else m_gta
        return loss_of(torch.cat([y, y_gta]), m_in), cfg.batch_size

    def evaluate_all(_step: int) -> dict:
        if vpcm is None:
            return {}
        return evaluate(model, vpcm, voffsets, mel, stft_loss) | (evaluate_gta(model, vpcm, voffsets, vgta, mel)
                                                                  if vgta is not None else {})

    result = train_loop(cfg=cfg, model=model, opt=opt, out=out, total=cfg.max_steps, lr_at=lambda s: lr_at(s, cfg),
                        step_loss=step_loss,
                        evaluate=evaluate_all,
                        eval_interval=cfg.eval_interval, checkpoint_interval=cfg.checkpoint_interval, clip_norm=10.0,
                        desc="vocoder", on_step=on_step, log=log, progress=progress)
    step, wall, loss_ema, history = result.step, result.wall_s, result.loss_ema, result.history
    save_weights(out / "model.safetensors", model)
    (out / "config.json").write_text(json.dumps({"model": mcfg.to_dict(), "mel": TTS_MEL.to_dict(),
                                                 "train": asdict(cfg)}, indent=2))
    summary = {"recipe": "vocoder", "steps": step, "max_steps": cfg.max_steps, "wall_s": round(wall, 1),
               "params": sum(p.numel() for p in model.parameters()), "final_loss": loss_ema,
               "quality": evaluate_all(step), "gta_utterances": int(len(gta_items)),
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


@torch.no_grad()
def evaluate_gta(model, pcm, offsets, mels: list, mel) -> dict:
    """Validation utterances voiced from the acoustic model's teacher-forced mels: log-mel L1 of the
    result against the recording (what a listener of the served voice hears, less the duration and
    pitch predictors' errors)."""
    model.eval()
    errors = []
    for i, m in enumerate(mels):
        if m is None:
            continue
        hop = model.config.hop
        usable = min(len(m), 1 + (int(offsets[i + 1]) - int(offsets[i])) // hop)
        y = torch.from_numpy(pcm[offsets[i]:offsets[i] + (usable - 1) * hop].astype(np.float32) / 32767.0)[None]
        y_hat = model(torch.from_numpy(m[:usable].astype(np.float32))[None])
        errors.append(F.l1_loss(mel(y_hat), mel(y)).item())
    return {"val_gta_mel_l1": float(np.mean(errors))} if errors else {}
