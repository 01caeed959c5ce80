"""What the acoustic model learns from: per utterance our phoneme ids, a duration per id (in
frames of 256 samples at 22,050 Hz), the log-mel frames, and pitch and energy per phoneme.

Durations come from the Piper teacher's alignments. The teacher phonemised with its own espeak-ng
build; ours is the system library, which differs here and there (newer builds insert `ʲ` between
`i` and a vowel). `align_durations` maps the teacher's durations onto our id sequence with a
sequence alignment: matching ids keep their frames, ids only the teacher has give theirs to the
previous kept id, ids only we have get none, replaced runs share their frames evenly. So the
model is trained on exactly the ids the service will give it.
"""
from __future__ import annotations

from difflib import SequenceMatcher

import numpy as np

from omniforge_shared.audio import MelConfig, log_mel, mel_filterbank

TTS_MEL = MelConfig(sample_rate=22_050, n_fft=1024, hop=256, n_mels=80, fmin=0.0, fmax=8000.0)


def align_durations(teacher: list[str], durations: list[int], ours: list[str]) -> list[int]:
    """Teacher symbols (pads included) with frame durations -> durations for our symbols; the
    total is kept."""
    out = [0] * len(ours)
    last = 0
    for op, a0, a1, b0, b1 in SequenceMatcher(None, teacher, ours, autojunk=False).get_opcodes():
        frames = durations[a0:a1]
        if op == "equal":
            out[b0:b1] = frames
            last = b1 - 1
        elif op == "delete":
            out[last] += sum(frames)
        elif op == "replace":
            total, n = sum(frames), b1 - b0
            share = [total // n + (1 if k < total % n else 0) for k in range(n)]
            out[b0:b1] = share
            last = b1 - 1
        else:                                 # insert: symbols only we have take no frames
            last = b1 - 1 if b0 == 0 else last
    return out


def yin_f0(x: np.ndarray, rate: int, hop: int, *, n_frames: int, fmin: float = 60.0, fmax: float = 400.0,
           threshold: float = 0.15, frame: int = 1024) -> np.ndarray:
    """Per-frame F0 in Hz (0 where unvoiced) by YIN (de Cheveigne and Kawahara, 2002), centred frames."""
    x = np.pad(x.astype(np.float64), (frame // 2, frame // 2 + frame))
    lag_min, lag_max = int(rate / fmax), int(rate / fmin)
    w = frame // 2
    f0 = np.zeros(n_frames, np.float32)
    starts = np.arange(n_frames) * hop
    frames = np.stack([x[s:s + frame] for s in starts])                       # (n, frame)
    # difference function via autocorrelation: d(tau) = r(0) + r_tau(0) - 2 r(tau)
    spec = np.fft.rfft(frames, n=2 * frame, axis=1)
    acf = np.fft.irfft(spec * np.conj(np.fft.rfft(frames[:, :w], n=2 * frame, axis=1)), axis=1)[:, :lag_max + 1]
    sq = np.cumsum(np.pad(frames ** 2, ((0, 0), (1, 0))), axis=1)
    energy0 = sq[:, w] - sq[:, 0]
    taus = np.arange(lag_max + 1)
    energy_tau = sq[:, taus + w] - sq[:, taus]
    d = energy0[:, None] + energy_tau - 2 * acf
    d[:, 0] = 0
    cum = np.cumsum(d[:, 1:], axis=1) / np.arange(1, lag_max + 1)
    dprime = np.ones_like(d)
    dprime[:, 1:] = d[:, 1:] / np.maximum(cum, 1e-12)
    for i in range(n_frames):
        if energy0[i] < 1e-6:
            continue
        cand = np.nonzero(dprime[i, lag_min:] < threshold)[0]
        if not len(cand):
            continue
        tau = cand[0] + lag_min
        while tau + 1 <= lag_max and dprime[i, tau + 1] < dprime[i, tau]:
            tau += 1
        if 1 <= tau < lag_max:                                   # parabolic refinement
            a, b, c = dprime[i, tau - 1], dprime[i, tau], dprime[i, tau + 1]
            denom = a - 2 * b + c
            tau = tau + (0.5 * (a - c) / denom if abs(denom) > 1e-12 else 0.0)
        f0[i] = rate / tau
    return f0


def per_phoneme(values: np.ndarray, durations: list[int], valid: np.ndarray | None = None) -> np.ndarray:
    """Frame values -> the mean over each phoneme's frames (0 for no frames / no valid frames)."""
    out = np.zeros(len(durations), np.float32)
    at = 0
    for i, d in enumerate(durations):
        seg = values[at:at + d]
        if valid is not None:
            seg = seg[valid[at:at + d]]
        if len(seg):
            out[i] = float(seg.mean())
        at += d
    return out


def utterance_features(x: np.ndarray, durations: list[int], fbank: np.ndarray | None = None) -> dict:
    """Audio (22,050 Hz, a whole number of hops long) and durations -> mel (T, 80), and log-F0 and
    energy per phoneme. T = sum(durations)."""
    t = int(sum(durations))
    mel = log_mel(x, TTS_MEL, fbank)[:t]
    if len(mel) < t:
        mel = np.pad(mel, ((0, t - len(mel)), (0, 0)), mode="edge")
    f0 = yin_f0(x, TTS_MEL.sample_rate, TTS_MEL.hop, n_frames=t)
    voiced = f0 > 0
    log_f0 = np.where(voiced, np.log(np.maximum(f0, 1.0)), 0.0)
    energy = np.log(np.exp(mel).sum(axis=1) + 1e-5)              # log of the mel power, per frame
    return {"mel": mel.astype(np.float16), "pitch": per_phoneme(log_f0, durations, voiced),
            "voiced": per_phoneme(voiced.astype(np.float32), durations) > 0.5,
            "energy": per_phoneme(energy, durations)}


def teacher_symbols(item: dict, id_to_symbol: dict[int, str]) -> list[str]:
    return [id_to_symbol.get(int(i), "_") for i in item["phoneme_ids"]]


__all__ = ["TTS_MEL", "align_durations", "yin_f0", "per_phoneme", "utterance_features", "teacher_symbols",
           "mel_filterbank"]
