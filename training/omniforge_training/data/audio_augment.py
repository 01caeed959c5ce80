"""Waveform and feature augmentation for speech recognition, numpy and torch, no torchaudio.

The starter voices are synthetic and clean; real recordings are not. Each training utterance
goes through a random chain of what a microphone, a room and a line do to speech:

  speed     resampling by 0.9 / 1.0 / 1.1 (tempo and pitch together, as Kaldi's speed perturbation)
  pitch     a vocal-tract-length-like warp: resample by 0.92-1.08, then stretch the time back
  room      convolution with a synthetic room impulse response (exponentially decaying noise,
            RT60 0.15-0.8 s) mixed with the dry signal
  colour    random low/high shelving EQ (microphones and loudspeakers are not flat)
  noise     white, pink or brown noise, or babble from other utterances, at 5-30 dB SNR
  phone     telephone line: 8 kHz, 300-3400 Hz band-pass, G.711 mu-law, back to the model rate
  gain      -12..+6 dB, then clipping guard
and SpecAugment on the log-mel features (2 frequency masks up to 27 bins, time masks up to 5%).
Every draw comes from the generator passed in, so a resumed run sees the same augmentations.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class AugmentConfig:
    p_speed: float = 0.6
    speeds: tuple[float, ...] = (0.9, 1.1)
    # spectrum warp (pitch and formants together), drawn log-uniform: most starter voices are men's,
    # and warping up by a quarter is what moves a man's voice towards a woman's or a child's (the
    # starter recognizer's held-out woman's voice lost a quarter of its character errors when warped
    # down by 0.8: the model knew too narrow a band of voices)
    p_pitch: float = 0.5
    pitch: tuple[float, float] = (0.82, 1.3)
    p_room: float = 0.35
    p_colour: float = 0.4
    p_noise: float = 0.45
    snr_db: tuple[float, float] = (5.0, 30.0)
    p_phone: float = 0.12
    gain_db: tuple[float, float] = (-12.0, 6.0)
    freq_masks: int = 2
    freq_width: int = 27
    time_masks: int = 6
    time_width: float = 0.05


def _resample(x: np.ndarray, rate_in: float, rate_out: float) -> np.ndarray:
    import soxr

    return soxr.resample(x.astype(np.float32), rate_in, rate_out, quality="HQ").astype(np.float32)


def speed(x: np.ndarray, factor: float) -> np.ndarray:
    """factor > 1 is faster (shorter, higher)."""
    return _resample(x, 16_000 * factor, 16_000)


def pitch_warp(x: np.ndarray, factor: float, rate: int) -> np.ndarray:
    """Shifts the spectrum by `factor` while keeping the length (resample, then overlap-add stretch)."""
    y = _resample(x, rate * factor, rate)                   # pitch and tempo change together
    return time_stretch(y, len(x))


def time_stretch(x: np.ndarray, n_out: int, *, frame: int = 512, tolerance: int = 128) -> np.ndarray:
    """WSOLA: resamples the time axis to `n_out` samples keeping the pitch. Each output frame is
    taken near its ideal place in the input, shifted (within `tolerance`) to the offset that best
    continues the previous frame, so the overlaps add in phase."""
    hop = frame // 2
    if len(x) < frame + 2 * tolerance or n_out < frame:
        return np.interp(np.linspace(0, len(x) - 1, n_out), np.arange(len(x)), x).astype(np.float32)
    x = np.pad(x.astype(np.float32), (tolerance, frame + tolerance))
    win = np.hanning(frame).astype(np.float32)
    n_frames = (n_out - frame) // hop + 2
    scale = (len(x) - frame - 2 * tolerance * 2) / max(1, (n_frames - 1) * hop)
    out = np.zeros(n_frames * hop + frame, np.float32)
    norm = np.zeros_like(out)
    prev = tolerance
    for k in range(n_frames):
        ideal = tolerance + int(k * hop * scale)
        if k == 0:
            at = ideal
        else:
            target = x[prev + hop:prev + hop + frame]                 # what would naturally follow
            lo = max(0, ideal - tolerance)
            region = x[lo:lo + frame + 2 * tolerance]
            if len(target) < frame or len(region) < frame:
                at = ideal
            else:
                at = lo + int(np.argmax(np.correlate(region, target, mode="valid")))
        seg = x[at:at + frame]
        if len(seg) < frame:
            break
        out[k * hop:k * hop + frame] += seg * win
        norm[k * hop:k * hop + frame] += win
        prev = at
    return (out / np.maximum(norm, 1e-3))[:n_out].astype(np.float32)


def room_impulse(rng: np.random.Generator, rate: int) -> np.ndarray:
    rt60 = rng.uniform(0.15, 0.8)
    n = int(rate * min(rt60, 0.6))
    t = np.arange(n) / rate
    rir = rng.standard_normal(n).astype(np.float32) * np.exp(-6.9 * t / rt60).astype(np.float32)
    rir[:int(rate * rng.uniform(0.002, 0.01))] = 0.0          # direct path first, reflections after a few ms
    rir[0] = 1.0
    return rir / np.sqrt((rir ** 2).sum())


def room(x: np.ndarray, rng: np.random.Generator, rate: int) -> np.ndarray:
    from scipy.signal import fftconvolve

    wet = fftconvolve(x, room_impulse(rng, rate))[:len(x)].astype(np.float32)
    mix = rng.uniform(0.3, 1.0)
    return mix * wet + (1 - mix) * x


def colour(x: np.ndarray, rng: np.random.Generator, rate: int) -> np.ndarray:
    """A random tilt of the spectrum: first-order low or high shelf of up to +-8 dB."""
    from scipy.signal import lfilter

    fc = rng.uniform(300, 3000)
    gain = 10 ** (rng.uniform(-8, 8) / 20)
    a = np.exp(-2 * np.pi * fc / rate)
    low = lfilter([1 - a], [1, -a], x).astype(np.float32)     # one-pole low-pass
    return (gain * low + (x - low)) if rng.random() < 0.5 else (low + gain * (x - low))


def coloured_noise(n: int, rng: np.random.Generator, kind: str) -> np.ndarray:
    white = rng.standard_normal(n).astype(np.float32)
    if kind == "white":
        return white
    spec = np.fft.rfft(white)
    f = np.maximum(np.arange(len(spec)), 1)
    spec = spec / (np.sqrt(f) if kind == "pink" else f)
    out = np.fft.irfft(spec, n).astype(np.float32)
    return out / (out.std() + 1e-8)


def add_noise(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    px = float((x ** 2).mean()) + 1e-10
    pn = float((noise ** 2).mean()) + 1e-10
    return x + noise * np.sqrt(px / (pn * 10 ** (snr_db / 10)))


def mulaw(x: np.ndarray, mu: int = 255) -> np.ndarray:
    """G.711 mu-law encode to 8 bits and decode again (numpy; no audioop)."""
    x = np.clip(x, -1, 1)
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    q = np.round((y + 1) / 2 * mu) / mu * 2 - 1
    return (np.sign(q) * ((1 + mu) ** np.abs(q) - 1) / mu).astype(np.float32)


def telephone(x: np.ndarray, rate: int) -> np.ndarray:
    from scipy.signal import butter, sosfilt

    y = _resample(x, rate, 8000)
    sos = butter(4, [300, 3400], btype="band", fs=8000, output="sos")
    y = sosfilt(sos, y).astype(np.float32)
    peak = np.abs(y).max() + 1e-8
    y = mulaw(y / peak * 0.9) * peak / 0.9
    return _resample(y, 8000, rate)


def augment(x: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig, *, rate: int = 16_000,
            babble: list[np.ndarray] | None = None) -> np.ndarray:
    """One random chain over a mono float32 waveform at `rate`."""
    if rng.random() < cfg.p_speed:
        x = _resample(x, rate * float(rng.choice(cfg.speeds)), rate)
    if rng.random() < cfg.p_pitch:
        x = pitch_warp(x, float(np.exp(rng.uniform(*np.log(cfg.pitch)))), rate)
    if rng.random() < cfg.p_room:
        x = room(x, rng, rate)
    if rng.random() < cfg.p_colour:
        x = colour(x, rng, rate)
    if rng.random() < cfg.p_noise:
        kind = rng.choice(["white", "pink", "brown", "babble"] if babble else ["white", "pink", "brown"])
        if kind == "babble":
            noise = np.zeros_like(x)
            for _ in range(int(rng.integers(2, 5))):
                other = babble[int(rng.integers(len(babble)))]
                k = min(len(other), len(x))
                at = int(rng.integers(0, len(x) - k + 1))
                noise[at:at + k] += other[:k]
            x = add_noise(x, noise, rng.uniform(max(cfg.snr_db[0], 10.0), cfg.snr_db[1]))
        else:
            x = add_noise(x, coloured_noise(len(x), rng, str(kind)), rng.uniform(*cfg.snr_db))
    if rng.random() < cfg.p_phone:
        x = telephone(x, rate)
    x = x * 10 ** (rng.uniform(*cfg.gain_db) / 20)
    peak = np.abs(x).max()
    return (x / peak * 0.99 if peak > 0.99 else x).astype(np.float32)


def spec_augment(feats, lengths, gen, cfg: AugmentConfig):
    """Masks in place on a (B, T, F) torch tensor; masked values are set to each utterance's mean."""
    import torch

    b, t, f = feats.shape
    for i in range(b):
        n = int(lengths[i])
        fill = feats[i, :n].mean()
        for _ in range(cfg.freq_masks):
            w = int(torch.randint(0, cfg.freq_width + 1, (1,), generator=gen))
            f0 = int(torch.randint(0, max(1, f - w), (1,), generator=gen))
            feats[i, :n, f0:f0 + w] = fill
        max_w = max(1, int(cfg.time_width * n))
        for _ in range(cfg.time_masks):
            w = int(torch.randint(0, max_w + 1, (1,), generator=gen))
            t0 = int(torch.randint(0, max(1, n - w), (1,), generator=gen))
            feats[i, t0:t0 + w] = fill
    return feats
