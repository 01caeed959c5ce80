"""Trains the FastSpeech-style acoustic model on the voices of a speech dataset: one speaker
embedding per voice.

Durations: a voice with alignments of its own (the Piper teacher) gives them, mapped onto our
phonemiser's ids; a recording espeak-ng made is timed by espeak-ng's own phoneme events
(`espeak_durations`), and with `flite_timing` one flite made by flite's own phone times
(`data/flite.py`); any other voice takes them from the reference voice's recording of the same
sentence, by dynamic time warping (`transfer_durations`). `init` starts from a trained model (the
starter voice): its layers, its pitch and energy statistics and its speaker rows; a new voice starts
as a copy of the reference voice and learns its difference.

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

from omniforge_shared.audio import log_mel, mel_filterbank, resample
from omniforge_shared.phonemes import SYMBOLS, Espeak, ids as symbol_ids, phonemise

from .checkpoint import atomic_write, save_weights
from .data.flite import Flite, flite_events
from .data.speech import load_speech
from .data.tts_features import (TTS_MEL, align_durations, espeak_durations, events_durations, teacher_symbols,
                                transfer_durations, utterance_features)
from .models.fastspeech import FastSpeech, TTSConfig
from .loop import train_loop
from .schedule import bucket_at, length_buckets, warmup_cosine


@dataclass
class TTSTrainConfig:
    data: str = ""
    out: str = "runs/tts"
    voices: list[str] = field(default_factory=lambda: ["joe"])
    reference_voice: str = "joe"       # its alignments time every other voice's recording of the same sentence
    teacher_ids: str = ""              # JSON symbol -> [id] map of the teacher voice (the Piper voice config)
    flite_timing: bool = False         # time flite's recordings by flite's own phone times instead of by DTW
    init: str = ""                     # start from this trained model (a run or the starter's acoustic/)
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


def espeak_voice(item: dict) -> str | None:
    """The espeak-ng voice that spoke a starter-corpus item (its rate and pitch are recorded), else None."""
    from .data.starter_speech import ESPEAK_VOICES

    if "rate_wpm" in item and "pitch" in item:
        return ESPEAK_VOICES.get(item["speaker"])
    return None


def flite_voice(item: dict) -> str | None:
    """The flite voice that spoke a starter-corpus item (its duration stretch is recorded), else None."""
    from .data.starter_speech import FLITE_VOICES

    if "duration_stretch" in item and item["speaker"] in FLITE_VOICES:
        return item["speaker"]
    return None


def group_features(ds, reference: dict | None, items: list[dict], id_to_symbol: dict[int, str],
                   fbank: np.ndarray, *, flite: bool = False) -> list[tuple[dict, str]]:
    """Features of the recordings of one sentence: (row, how it was timed: "own", "espeak",
    "flite" or "dtw") per item. An item with alignments of its own uses them; one espeak-ng spoke
    (or, with `flite`, one flite spoke) is timed by that synthesiser's own phoneme times; the
    others against `reference`'s recording, by DTW."""
    def on_ours(item: dict, symbols: list[str], durations: list[int]) -> tuple[list[int], list[int]]:
        ids = our_ids(item["spoken"])
        return ids, align_durations(symbols, durations, [SYMBOLS[i] for i in ids])

    def aligned(item: dict) -> tuple[list[int], list[int]]:
        return on_ours(item, teacher_symbols(item, id_to_symbol), item["durations"])

    def by_espeak(item: dict, x: np.ndarray, n_frames: int) -> tuple[list[int], list[int]] | None:
        voice = espeak_voice(item)
        if voice is None:
            return None
        pcm, events = Espeak.synthesise(item["spoken"], voice, rate=item["rate_wpm"], pitch=item["pitch"])
        timed = espeak_durations(x, pcm, events, n_frames, hop=TTS_MEL.hop)
        return None if timed is None else on_ours(item, *timed)

    def by_flite(item: dict, x: np.ndarray, n_frames: int) -> tuple[list[int], list[int]] | None:
        voice = flite_voice(item) if flite else None
        if voice is None:
            return None
        samples, rate, phones = Flite.synthesise(item["spoken"], voice, duration_stretch=item["duration_stretch"])
        speech = resample(samples.astype(np.float32) / 32768.0, rate, TTS_MEL.sample_rate)
        timed = events_durations(x, speech, flite_events(phones, TTS_MEL.sample_rate), n_frames, hop=TTS_MEL.hop)
        return None if timed is None else on_ours(item, *timed)

    ref = None
    out = []
    for item in items:
        x = ds.audio(item)
        mel = log_mel(x, TTS_MEL, fbank)
        how = "own"
        if item.get("durations"):
            ids, durations = aligned(item)
        elif (timed := by_espeak(item, x, len(mel))) is not None:
            (ids, durations), how = timed, "espeak"
        elif (timed := by_flite(item, x, len(mel))) is not None:
            (ids, durations), how = timed, "flite"
        else:
            if ref is None:
                ref = (*aligned(reference), log_mel(ds.audio(reference), TTS_MEL, fbank))
            ids, durations, how = ref[0], transfer_durations(ref[1], ref[2], mel), "dtw"
        feats = utterance_features(x, durations, fbank, mel=mel)
        out.append(({"id": item["id"], "speaker": item["speaker"], "ids": np.array(ids, np.int16),
                     "durations": np.array(durations, np.int16), **feats}, how))
    return out


_WORKER: tuple | None = None


def _worker_init(data: str, id_to_symbol: dict[int, str], flite: bool = False) -> None:
    global _WORKER
    torch.set_num_threads(1)
    _WORKER = (load_speech(Path(data)), id_to_symbol, mel_filterbank(TTS_MEL), flite)


def _worker_group(task: tuple[dict | None, list[dict]]) -> list[tuple[dict, str]]:
    ds, id_to_symbol, fbank, flite = _WORKER
    return group_features(ds, task[0], task[1], id_to_symbol, fbank, flite=flite)


def build_features(ds, items: list[dict], id_to_symbol: dict[int, str], cache: Path, *,
                   references: dict[str, dict] | None = None, workers: int = 1, flite: bool = False,
                   log=print, progress: bool = True) -> list[dict]:
    """`references`: spoken text -> the reference voice's item (with alignments) for the items that
    have none of their own; `flite`: time flite's recordings by flite. Sentences are worked on by
    `workers` processes."""
    voices = ",".join(sorted({it["speaker"] for it in items}))
    key = f"{ds.manifest['content_hash']}:{len(items)}:{voices}:dtw1:espeak1" + (":flite1" if flite else "")
    if cache.exists():
        data = torch.load(cache, weights_only=False)
        if data["key"] == key:
            return data["rows"]
    t0 = time.time()
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(item["spoken"], []).append(i)
    tasks = [((references or {}).get(spoken) if any(not items[i].get("durations") for i in idx) else None,
              [items[i] for i in idx]) for spoken, idx in groups.items()]
    if workers > 1:
        from multiprocessing import get_context

        pool = get_context("spawn").Pool(workers, initializer=_worker_init, initargs=(str(ds.path), id_to_symbol, flite))
        results = pool.imap(_worker_group, tasks, chunksize=4)
    else:
        fbank = mel_filterbank(TTS_MEL)
        pool, results = None, (group_features(ds, ref, group, id_to_symbol, fbank, flite=flite)
                                for ref, group in tasks)
    if progress:
        from tqdm import tqdm
        results = tqdm(results, total=len(tasks), desc=f"tts features {cache.stem}", unit="sentence")
    rows: list[dict | None] = [None] * len(items)
    timing = {"own": 0, "espeak": 0, "flite": 0, "dtw": 0}
    try:
        for idx, got in zip(groups.values(), results):
            for i, (row, how) in zip(idx, got):
                rows[i] = row
                timing[how] += 1
    finally:
        if pool is not None:
            pool.terminate()
    atomic_write(cache, lambda tmp: torch.save({"key": key, "rows": rows}, tmp))
    log(f"tts features of {len(rows)} utterances ({timing['own']} with alignments of their own, {timing['espeak']} "
        f"timed by espeak-ng's phoneme events, {timing['flite']} by flite's phone times, {timing['dtw']} by DTW against the reference voice) "
        f"in {time.time() - t0:.0f} s")
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


def losses(model: FastSpeech, batch: dict, *, with_mel: bool = False) -> dict:
    """The training losses; `with_mel` adds the predicted mel (`mel_hat`) for per-utterance scores."""
    mel_hat, logd, pitch, energy = model(batch["ids"], batch["lengths"], batch["speaker"], batch["durations"],
                                         batch["pitch"], batch["energy"], batch["mel_lengths"])
    t = batch["mel"].shape[1]
    fmask = (torch.arange(t)[None, :] < batch["mel_lengths"][:, None]).float()[..., None]
    pmask = (torch.arange(batch["ids"].shape[1])[None, :] < batch["lengths"][:, None]).float()
    mel = (torch.abs(mel_hat - batch["mel"]) * fmask).sum() / (fmask.sum() * mel_hat.shape[-1])
    dur = (((logd - torch.log1p(batch["durations"].float())) ** 2) * pmask).sum() / pmask.sum()
    pit = (((pitch - batch["pitch"]) ** 2) * pmask).sum() / pmask.sum()
    ene = (((energy - batch["energy"]) ** 2) * pmask).sum() / pmask.sum()
    out = {"loss": mel + dur + 0.5 * pit + 0.5 * ene, "mel_l1": mel, "duration_mse": dur, "pitch_mse": pit,
           "energy_mse": ene}
    return out | {"mel_hat": mel_hat} if with_mel else out


def spread(items: list[dict], voices: list[str], n: int) -> list[dict]:
    """Up to n items, taken from every voice in turn."""
    by = {v: [it for it in items if it["speaker"] == v] for v in voices}
    out = []
    for k in range(n):
        for v in voices:
            if k < len(by[v]) and len(out) < n:
                out.append(by[v][k])
    return out


def start_from(model: FastSpeech, init: Path, init_speakers: list[str], voices: list[str], reference: str) -> None:
    """Loads a trained model's weights into `model`; each voice takes its own speaker rows when the
    trained model knows it, else the reference voice's (else the first); a missing output speaker
    embedding starts at zero."""
    from safetensors.torch import load_file

    tensors = {k: v.float() for k, v in load_file(str(init / "model.safetensors")).items()}
    fallback = init_speakers.index(reference) if reference in init_speakers else 0
    rows = [init_speakers.index(v) if v in init_speakers else fallback for v in voices]
    for name in ("speaker.weight", "speaker_out.weight"):
        if name in tensors:
            tensors[name] = tensors[name][rows]
        elif name == "speaker_out.weight" and model.config.speaker_out:
            tensors[name] = torch.zeros_like(model.speaker_out.weight)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ValueError(f"{init} holds a different acoustic model: missing {missing}, unexpected {unexpected}")


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
    references = {it["spoken"]: it for it in ds.items
                  if it["speaker"] == cfg.reference_voice and it.get("durations") and it.get("spoken")}
    has = lambda it: (it["speaker"] in cfg.voices and it.get("spoken")  # noqa: E731
                      and (it.get("durations") or it["spoken"] in references))
    train_items = [it for it in ds.split("train") if has(it)]
    val_items = spread([it for it in ds.split("val") if has(it)], cfg.voices, 100)
    if len(train_items) < 4:
        raise ValueError(f"only {len(train_items)} training utterances with durations for voices {cfg.voices} "
                         f"(a voice without alignments of its own needs recordings of the same sentences by "
                         f"the reference voice {cfg.reference_voice!r})")
    missing = [v for v in cfg.voices if not any(it["speaker"] == v for it in train_items)]
    if missing:
        raise ValueError(f"no training utterances with durations for voices {missing}")
    id_to_symbol = load_teacher_map(cfg.teacher_ids)
    train = build_features(ds, train_items, id_to_symbol, out / "cache" / "train.pt", references=references,
                           workers=cfg.threads, flite=cfg.flite_timing, log=log, progress=progress)
    val = build_features(ds, val_items, id_to_symbol, out / "cache" / "val.pt", references=references,
                         workers=cfg.threads, flite=cfg.flite_timing, log=log, progress=progress)
    speakers = {v: i for i, v in enumerate(cfg.voices)}
    resuming = cfg.resume and (out / "checkpoints" / "last.pt").exists()
    if cfg.init:
        init = json.loads((Path(cfg.init) / "config.json").read_text())
        mcfg = TTSConfig.from_dict({**init["model"], "n_speakers": len(cfg.voices),
                                    "speaker_out": init["model"].get("speaker_out", False) or len(cfg.voices) > 1})
    else:
        voiced = np.concatenate([r["pitch"][r["voiced"]] for r in train])
        energy = np.concatenate([r["energy"] for r in train])
        mcfg = TTSConfig(n_symbols=len(SYMBOLS), n_speakers=len(cfg.voices), speaker_out=len(cfg.voices) > 1,
                         d_model=cfg.d_model, enc_layers=cfg.enc_layers, dec_layers=cfg.dec_layers, ff_dim=cfg.ff_dim,
                         pitch_mean=float(voiced.mean()), pitch_std=float(voiced.std() + 1e-5),
                         energy_mean=float(energy.mean()), energy_std=float(energy.std() + 1e-5))
    batches = length_buckets([len(r["mel"]) for r in train], cfg.batch_frames)
    torch.manual_seed(cfg.seed)
    model = FastSpeech(mcfg)
    if cfg.init and not resuming:
        start_from(model, Path(cfg.init), init.get("speakers") or [cfg.reference_voice], cfg.voices,
                   cfg.reference_voice)
        log(f"starting from the weights in {cfg.init}")
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
    scales = duration_scales(model, train, speakers, mcfg)
    (out / "config.json").write_text(json.dumps({"model": mcfg.to_dict(), "speakers": cfg.voices,
                                                 "mel": TTS_MEL.to_dict(), "train": asdict(cfg),
                                                 "duration_scale": scales}, indent=2))
    summary = {"recipe": "tts", "steps": step, "max_steps": cfg.max_steps, "wall_s": round(wall, 1),
               "params": sum(p.numel() for p in model.parameters()), "final_loss": loss_ema,
               "quality": evaluate(model, val, speakers, mcfg) if val else {}, "history": history,
               "dataset": ds.manifest.get("name"), "dataset_hash": ds.manifest["content_hash"],
               "train_utterances": len(train), "config": asdict(cfg)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


@torch.no_grad()
def duration_scales(model: FastSpeech, rows: list[dict], speakers: dict, cfg: TTSConfig, *,
                    max_rows: int = 2000) -> dict[str, float]:
    """Per voice, the teacher's frames over the predicted frames, summed over training sentences.
    The duration predictor regresses log(1 + frames), whose expectation sits below the log of
    the mean: its durations come out short (5-15 % on the starter voices), and a voice that
    speaks faster than its teacher loses words. The served voice multiplies its predicted
    durations by this scale, so it speaks at its teacher's average rate."""
    model.eval()
    rows = rows[:: max(1, len(rows) // max_rows)]
    sums: dict[str, list[float]] = {}
    for i in range(0, len(rows), 32):
        chunk = rows[i:i + 32]
        batch = collate(chunk, speakers, cfg)
        _, logd, _, _ = model.encode(batch["ids"], batch["lengths"], batch["speaker"])
        pred = torch.clamp(torch.expm1(logd), min=0)
        for k, r in enumerate(chunk):
            n = int(batch["lengths"][k])
            t = sums.setdefault(r["speaker"], [0.0, 0.0])
            t[0] += float(batch["durations"][k, :n].sum())
            t[1] += float(pred[k, :n].sum())
    return {v: round(a / b, 4) for v, (a, b) in sorted(sums.items()) if b > 0}


def calibrate_durations(run_dir: Path, *, threads: int = 2, log=print) -> dict[str, float]:
    """`duration_scales` of a trained run (from its cached training features), written into its
    config.json for export."""
    from .export_tts import load_tts

    torch.set_num_threads(threads)
    run_dir = Path(run_dir)
    cache = run_dir / "cache" / "train.pt"
    if not cache.exists():
        raise FileNotFoundError(f"{cache} is missing: calibrate the run that trained, with its feature cache")
    model, config = load_tts(run_dir)
    speakers = {s: i for i, s in enumerate(config["speakers"])}
    rows = [r for r in torch.load(cache, weights_only=False)["rows"] if r["speaker"] in speakers]
    scales = duration_scales(model, rows, speakers, TTSConfig.from_dict(config["model"]))
    config["duration_scale"] = scales
    (run_dir / "config.json").write_text(json.dumps(config, indent=2))
    log("duration scale per voice: " + ", ".join(f"{v} {s:.3f}" for v, s in scales.items()))
    return scales


@torch.no_grad()
def evaluate(model: FastSpeech, rows: list[dict], speakers: dict, cfg: TTSConfig) -> dict:
    """Teacher-forced mel L1 (in all and per voice), and the predicted durations' error in frames
    per phoneme and in total."""
    model.eval()
    sums = {"val_mel_l1": 0.0, "val_duration_mse": 0.0}
    abs_err, total_err, by_voice = [], [], {}
    for i in range(0, len(rows), 16):
        chunk = rows[i:i + 16]
        batch = collate(chunk, speakers, cfg)
        parts = losses(model, batch, with_mel=True)
        sums["val_mel_l1"] += parts["mel_l1"].item() * len(chunk)
        sums["val_duration_mse"] += parts["duration_mse"].item() * len(chunk)
        mel_hat = parts["mel_hat"]
        _, logd, _, _ = model.encode(batch["ids"], batch["lengths"], batch["speaker"])
        pred = torch.clamp(torch.round(torch.expm1(logd)), min=0)
        for k, r in enumerate(chunk):
            n, m = int(batch["lengths"][k]), int(batch["mel_lengths"][k])
            abs_err.append((pred[k, :n] - batch["durations"][k, :n]).abs().mean().item())
            total_err.append(abs(pred[k, :n].sum().item() / max(1, batch["durations"][k, :n].sum().item()) - 1))
            by_voice.setdefault(r["speaker"], []).append((mel_hat[k, :m] - batch["mel"][k, :m]).abs().mean().item())
    n = max(1, len(rows))
    out = {**{k: v / n for k, v in sums.items()}, "val_duration_abs_frames": float(np.mean(abs_err)),
           "val_length_rel_error": float(np.mean(total_err))}
    if len(by_voice) > 1:
        out |= {f"val_mel_l1_{v}": float(np.mean(e)) for v, e in sorted(by_voice.items())}
    return out
