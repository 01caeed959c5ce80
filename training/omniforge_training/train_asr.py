"""Trains the conformer-CTC recognizer on a speech dataset.

    1. every training and validation utterance once: decoded, 16 kHz, loudness-normalised as the
       service does it (cached in the run folder by dataset hash)
    2. batches of similar length (at most `batch_seconds` of padded audio), in an order that is a
       pure function of (seed, epoch), so a resumed run sees the same batches
    3. each step: a random chain of augmentations per utterance (speed, pitch, room, EQ, noise,
       telephone, gain; seeded by (seed, step, index)), log-mel in torch, SpecAugment, CTC loss
    4. every `eval_interval` steps: greedy WER/CER on validation utterances
    5. at the end: WER/CER on the test split, per voice, with the held-out voice apart
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from omniforge_shared.audio import MelConfig, normalise_loudness, resample

from .checkpoint import atomic_write, load_weights, save_weights
from .data.audio_augment import AugmentConfig, augment, spec_augment
from .data.audio_features import LogMel
from .data.speech import SpeechDataset, load_speech
from .models.conformer import ASRConfig, ConformerCTC, encode_text
from .loop import train_loop
from .schedule import bucket_at, length_buckets, warmup_cosine


@dataclass
class ASRTrainConfig:
    data: str = ""
    out: str = "runs/asr"
    d_model: int = 144
    n_layers: int = 8
    n_heads: int = 4
    conv_kernel: int = 15
    dropout: float = 0.1
    max_steps: int = 3000
    batch_seconds: float = 160.0
    max_utterance_seconds: float = 16.0
    lr: float = 2e-3
    min_lr: float = 5e-5
    warmup_steps: int = 300
    weight_decay: float = 1e-3
    augment: bool = True
    augment_config: dict = field(default_factory=dict)
    eval_interval: int = 250
    eval_items: int = 200
    checkpoint_interval: int = 100
    seed: int = 1337
    threads: int = 2
    resume: bool = True
    init: str = ""                     # start from these weights (a run or the starter) unless a checkpoint resumes
    extra_data: list[str] = field(default_factory=list)   # more speech datasets whose train splits join training


def transcript_of(item: dict) -> str:
    if item.get("transcript"):
        return item["transcript"]
    from .data.starter_speech import transcript

    return transcript(item["text"])


# ---- audio in memory ------------------------------------------------------------------------------

@dataclass
class AudioBank:
    """All utterances of some splits at 16 kHz, int16, one array with offsets."""
    pcm: np.ndarray
    offsets: np.ndarray
    items: list[dict]

    def wave(self, i: int) -> np.ndarray:
        return self.pcm[self.offsets[i]:self.offsets[i + 1]].astype(np.float32) / 32767.0

    def seconds(self, i: int) -> float:
        return (self.offsets[i + 1] - self.offsets[i]) / 16_000


def join_banks(a: AudioBank, b: AudioBank) -> AudioBank:
    return AudioBank(np.concatenate([a.pcm, b.pcm]), np.concatenate([a.offsets, b.offsets[1:] + a.offsets[-1]]),
                     a.items + b.items)


def load_bank(ds: SpeechDataset, items: list[dict], cache: Path, *, log=print, progress: bool = True) -> AudioBank:
    key = f"{ds.manifest['content_hash']}:{len(items)}:{items[0]['id'] if items else ''}"
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        if str(z["key"]) == key:
            return AudioBank(z["pcm"], z["offsets"], items)
    t0 = time.time()
    rows = items
    if progress:
        from tqdm import tqdm
        rows = tqdm(items, desc=f"load {cache.stem}", unit="utt")
    waves = []
    for it in rows:
        x = resample(ds.audio(it), ds.sample_rate, 16_000)
        try:
            x = normalise_loudness(x, 16_000)
        except ValueError:
            pass
        waves.append(np.round(np.clip(x, -1, 1) * 32767).astype(np.int16))
    offsets = np.concatenate([[0], np.cumsum([len(w) for w in waves])]).astype(np.int64)
    pcm = np.concatenate(waves) if waves else np.zeros(0, np.int16)
    atomic_write(cache, lambda tmp: np.savez(open(tmp, "wb"), pcm=pcm, offsets=offsets, key=np.array(key)))
    log(f"{len(items)} utterances ({len(pcm) / 16_000 / 3600:.2f} h) loaded in {time.time() - t0:.0f} s")
    return AudioBank(pcm, offsets, items)


def featurise(waves: list[np.ndarray], mel: LogMel) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(w) for w in waves)
    x = torch.zeros(len(waves), n)
    for i, w in enumerate(waves):
        x[i, :len(w)] = torch.from_numpy(w)
    lengths = torch.tensor([1 + len(w) // mel.cfg.hop for w in waves])
    return mel(x), lengths


def targets_of(texts: list[str], chars: str) -> tuple[torch.Tensor, torch.Tensor]:
    ids = [encode_text(t, chars) for t in texts]
    return torch.tensor([i for row in ids for i in row], dtype=torch.long), torch.tensor([len(r) for r in ids])


# ---- decoding and scoring -------------------------------------------------------------------------

def greedy_decode(logp: np.ndarray, length: int, chars: str) -> str:
    best = logp[:length].argmax(-1)
    out, prev = [], 0
    for t in best:
        if t != prev and t != 0:
            out.append(chars[t - 1])
        prev = t
    return " ".join("".join(out).split())


def error_rates(refs: list[str], hyps: list[str]) -> dict:
    import jiwer

    pairs = [(r, h) for r, h in zip(refs, hyps) if r.strip()]
    if not pairs:
        return {}
    refs, hyps = [p[0] for p in pairs], [p[1] if p[1].strip() else "<empty>" for p in pairs]
    return {"wer": round(float(jiwer.wer(refs, hyps)), 4), "cer": round(float(jiwer.cer(refs, hyps)), 4),
            "utterances": len(refs)}


@torch.no_grad()
def transcribe_bank(model: ConformerCTC, bank: AudioBank, idx: list[int], mel: LogMel, *,
                    batch_seconds: float = 120.0) -> list[str]:
    model.eval()
    order = sorted(idx, key=bank.seconds)
    out: dict[int, str] = {}
    cur: list[int] = []

    def flush():
        feats, lengths = featurise([bank.wave(i) for i in cur], mel)
        logp, olens = model(feats, lengths)
        for k, i in enumerate(cur):
            out[i] = greedy_decode(logp[k].numpy(), int(olens[k]), model.config.chars)

    for i in order:
        if cur and bank.seconds(i) * (len(cur) + 1) > batch_seconds:
            flush()
            cur = []
        cur.append(i)
    if cur:
        flush()
    return [out[i] for i in idx]


def score(model, bank: AudioBank, idx: list[int], mel: LogMel) -> tuple[dict, list[str]]:
    hyps = transcribe_bank(model, bank, idx, mel)
    return error_rates([transcript_of(bank.items[i]) for i in idx], hyps), hyps


class Prefetcher:
    """Calls `fn(step)` for the next step in a background thread while the current step trains:
    the waveform augmentation (numpy, scipy and soxr, which release the GIL) overlaps the forward
    and backward passes instead of waiting for them (~10 % of a step on two CPU threads). What it
    returns depends only on `step`, so a resumed run reads the same batches."""

    def __init__(self, fn: Callable[[int], object]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.fn = fn
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="prefetch")
        self.pending: tuple[int, object] | None = None

    def __call__(self, step: int):
        ahead, self.pending = self.pending, None
        out = ahead[1].result() if ahead and ahead[0] == step else self.fn(step)
        self.pending = (step + 1, self.pool.submit(self.fn, step + 1))
        return out

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def lr_at(step: int, cfg: ASRTrainConfig) -> float:
    return warmup_cosine(step, lr=cfg.lr, min_lr=cfg.min_lr, warmup=cfg.warmup_steps, total=cfg.max_steps)


# ---- training -------------------------------------------------------------------------------------

def train_asr(cfg: ASRTrainConfig, *, on_step: Callable | None = None, log=print, progress: bool = True) -> dict:
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_speech(Path(cfg.data))
    heldout = set(ds.manifest.get("split", {}).get("heldout_speakers", []))
    ok = lambda it: 0 < it["seconds"] <= cfg.max_utterance_seconds and transcript_of(it)  # noqa: E731
    train_items = [it for it in ds.split("train") if ok(it)]
    val_items = [it for it in ds.split("val") if ok(it) and it["speaker"] not in heldout]
    test_items = [it for it in ds.split("test") if ok(it)]
    if len(train_items) < 8:
        raise ValueError(f"only {len(train_items)} training utterances in {cfg.data}; the recognizer needs more")
    mcfg = ASRConfig(d_model=cfg.d_model, n_layers=cfg.n_layers, n_heads=cfg.n_heads, conv_kernel=cfg.conv_kernel,
                     dropout=cfg.dropout)
    melcfg = MelConfig(sample_rate=mcfg.sample_rate, n_fft=mcfg.n_fft, hop=mcfg.hop, n_mels=mcfg.n_mels)
    mel = LogMel(melcfg)
    train = load_bank(ds, train_items, out / "cache" / "train.npz", log=log, progress=progress)
    extras = []
    kept_back = {transcript_of(it) for it in ds.items if it["split"] != "train"}
    for k, path in enumerate(cfg.extra_data):
        extra = load_speech(Path(path))
        # before any filter: a set that holds the held-out voice at all is refused, not quietly thinned
        if heldout & {it["speaker"] for it in extra.split("train")}:
            raise ValueError(f"{path} holds the held-out voice {sorted(heldout)}: it must never be trained on")
        items = [it for it in extra.split("train") if ok(it)]
        leaked = [it for it in items if transcript_of(it) in kept_back]
        if leaked:          # a validation or test sentence heard in training would flatter both
            log(f"{path}: {len(leaked)} utterances say validation or test sentences of {cfg.data}; left out")
            items = [it for it in items if transcript_of(it) not in kept_back]
        if not items:
            raise ValueError(f"{path} has no training utterances under {cfg.max_utterance_seconds} s")
        train = join_banks(train, load_bank(extra, items, out / "cache" / f"extra{k}.npz", log=log, progress=progress))
        extras.append({"name": extra.manifest.get("name"), "content_hash": extra.manifest["content_hash"],
                       "utterances": len(items), "left_out_as_heldout_sentences": len(leaked)})
        log(f"{path}: {len(items)} more training utterances ({extra.manifest.get('name')})")
    train_items = train.items
    val = load_bank(ds, val_items, out / "cache" / "val.npz", log=log, progress=progress)
    batches = length_buckets([train.seconds(i) for i in range(len(train.items))], cfg.batch_seconds)
    acfg = AugmentConfig(**cfg.augment_config)
    cfg = replace(cfg, augment_config=asdict(acfg))      # the config written down names every setting used
    rng0 = np.random.default_rng(cfg.seed)
    babble = [train.wave(int(i)) for i in rng0.choice(len(train_items), size=min(64, len(train_items)), replace=False)]
    texts = [transcript_of(it) for it in train_items]

    torch.manual_seed(cfg.seed)
    model = ConformerCTC(mcfg)
    if cfg.init and not (cfg.resume and (out / "checkpoints" / "last.pt").exists()):
        init_cfg = ASRConfig.from_dict(json.loads((Path(cfg.init) / "config.json").read_text())["model"])
        if init_cfg != mcfg:
            raise ValueError(f"{cfg.init} holds a different recognizer ({init_cfg}); train with its dimensions")
        load_weights(Path(cfg.init) / "model.safetensors", model)
        log(f"starting from the weights in {cfg.init}")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-9)
    val_idx = list(range(min(cfg.eval_items, len(val_items))))

    def waves_of(step: int) -> tuple[list[int], list[np.ndarray]]:
        idx = bucket_at(batches, step=step, seed=cfg.seed)
        waves = []
        for k, i in enumerate(idx):
            w = train.wave(int(i))
            if cfg.augment:
                w = augment(w, np.random.default_rng([cfg.seed, step, k]), acfg, babble=babble)
            waves.append(w)
        return idx, waves

    prefetch = Prefetcher(waves_of)

    def step_loss(step: int):
        idx, waves = prefetch(step)
        feats, lengths = featurise(waves, mel)
        if cfg.augment:
            spec_augment(feats, lengths, torch.Generator().manual_seed(cfg.seed * 1_000_003 + step), acfg)
        targets, target_lengths = targets_of([texts[int(i)] for i in idx], mcfg.chars)
        return model.ctc_loss(feats, lengths, targets, target_lengths), len(idx)

    def evaluate(step: int) -> dict:
        if not val_idx:
            return {}
        rates, hyps = score(model, val, val_idx, mel)
        log(f"  val sample: {transcript_of(val.items[0])!r} -> {hyps[0]!r}")
        return {f"val_{k}": v for k, v in rates.items() if k != "utterances"}

    try:
        result = train_loop(cfg=cfg, model=model, opt=opt, out=out, total=cfg.max_steps, lr_at=lambda s: lr_at(s, cfg),
                            step_loss=step_loss, evaluate=evaluate, eval_interval=cfg.eval_interval,
                            checkpoint_interval=cfg.checkpoint_interval, clip_norm=5.0, desc="asr", on_step=on_step,
                            log=log, progress=progress)
    finally:
        prefetch.close()
    step, wall, loss_ema, history = result.step, result.wall_s, result.loss_ema, result.history
    save_weights(out / "model.safetensors", model)
    (out / "config.json").write_text(json.dumps({"model": mcfg.to_dict(), "mel": melcfg.to_dict(),
                                                 "train": asdict(cfg)}, indent=2))
    quality = {}
    if test_items:
        test = load_bank(ds, test_items, out / "cache" / "test.npz", log=log, progress=progress)
        quality = evaluate_by_voice(model, test, mel, heldout)
    summary = {"recipe": "asr", "steps": step, "max_steps": cfg.max_steps, "wall_s": round(wall, 1),
               "params": sum(p.numel() for p in model.parameters()), "final_loss": loss_ema, "quality": quality,
               "history": history, "dataset": ds.manifest.get("name"), "dataset_hash": ds.manifest["content_hash"],
               "extra_datasets": extras,
               "train_hours": round(len(train.pcm) / 16_000 / 3600, 3), "config": asdict(cfg)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def evaluate_by_voice(model, test: AudioBank, mel: LogMel, heldout: set[str]) -> dict:
    """WER/CER on the test split: all, held-out voices, training voices on held-out sentences, per voice."""
    idx = list(range(len(test.items)))
    hyps = transcribe_bank(model, test, idx, mel)
    refs = [transcript_of(it) for it in test.items]
    speakers = [it["speaker"] for it in test.items]

    def rates(keep) -> dict:
        sel = [k for k in idx if keep(k)]
        return error_rates([refs[k] for k in sel], [hyps[k] for k in sel]) if sel else {}

    out = {"all": rates(lambda k: True),
           "heldout_voice": rates(lambda k: speakers[k] in heldout),
           "training_voices_heldout_sentences": rates(lambda k: speakers[k] not in heldout),
           "per_voice": {s: rates(lambda k, s=s: speakers[k] == s) for s in sorted(set(speakers))},
           "examples": [{"voice": speakers[k], "ref": refs[k], "hyp": hyps[k]} for k in idx[:: max(1, len(idx) // 12)]]}
    return out
