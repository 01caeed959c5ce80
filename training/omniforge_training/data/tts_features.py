"""What the acoustic model learns from: per utterance our phoneme ids, a duration per id (in
frames of 256 samples at 22,050 Hz), the log-mel frames, and pitch and energy per phoneme.

Durations come from the Piper teacher's alignments. The teacher phonemised with its own espeak-ng
build; ours is the system library, which differs here and there (newer builds insert `ʲ` between
`i` and a vowel). `align_durations` maps the teacher's durations onto our id sequence with a
sequence alignment: matching ids keep their frames, ids only the teacher has give theirs to the
previous kept id, ids only we have get none, replaced runs share their frames evenly. So the
model is trained on exactly the ids the service will give it.

Voices with no alignments of their own and no synthesiser to time them take their durations from
the teacher's recording of the same sentence: dynamic time warping between the two recordings' cepstra
(mean- and variance-normalised per utterance, so the timbre matters less than what is said) maps
every frame of the voice onto a frame of the teacher, and so onto the teacher's phoneme there
(`transfer_durations`).

Voices that espeak-ng speaks are timed by espeak-ng itself (`espeak_durations`): it says the same
sentence again with the recording's voice, rate and pitch (the library's speech is sample for
sample what the command wrote), and its phoneme events give the sample where each phoneme starts.
The recording was trimmed of leading silence; the offset is found by matching the two. flite's
recordings can be timed alike by flite's own phone times (`data/flite.py`, `events_durations`;
`train tts --flite-timing`).
"""
from __future__ import annotations

import unicodedata
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


def espeak_durations(recording: np.ndarray, pcm: bytes, events: list[tuple[str, int]], n_frames: int, *,
                     hop: int = 256) -> tuple[list[str], list[int]] | None:
    """espeak-ng's speech of a sentence (`Espeak.synthesise`: 16-bit PCM and (IPA, start sample)
    per phoneme) -> `events_durations` of `recording`."""
    return events_durations(recording, np.frombuffer(pcm, np.int16).astype(np.float32) / 32768.0, events,
                            n_frames, hop=hop)


def events_durations(recording: np.ndarray, x: np.ndarray, events: list[tuple[str, int]], n_frames: int, *,
                     hop: int = 256) -> tuple[list[str], list[int]] | None:
    """A synthesiser's speech of a sentence (`x`, at the recording's rate) and (IPA, start sample)
    per phoneme -> (symbols, frame durations) of `recording`, the same speech with its leading
    silence cut: BOS, then each phoneme's code points each followed by a pad (a pause is a space),
    sharing the phoneme's frames, then EOS; `n_frames` in all. None when the recording is not
    that speech (another voice, rate or text)."""
    n = len(recording)
    w = min(n, 2048)
    if w < 64 or not events or len(x) < w:
        return None
    head = recording[:w].astype(np.float32)
    span = x[: min(len(x), 22_050 + w)]                     # the cut leading silence is under a second
    corr = np.correlate(span, head, "valid")
    energy = np.concatenate([[0.0], np.cumsum(span.astype(np.float64) ** 2)])
    start = int(np.argmax(corr / (np.sqrt((energy[w:] - energy[:-w])[: len(corr)]) + 1e-9)))
    # the same samples up to a gain (the corpus scales loud recordings down) and 16-bit rounding;
    # the command's file goes on after the speech the library sends (an echo's tail, then silence)
    m = min(n, len(x) - start)
    seg = x[start:start + m]
    gain = float(seg @ recording[:m]) / (float(seg @ seg) + 1e-12)
    if not 0.5 < gain < 2 or np.abs(gain * seg - recording[:m]).max() > 1e-3 or n - m > 0.5 * 22_050:
        return None
    bounds = [int(np.clip(round((sample - start) / hop), 0, n_frames)) for _, sample in events]
    bounds = np.maximum.accumulate(bounds).tolist()
    symbols, durations = ["^", "_"], [bounds[0], 0]
    for k, (name, _) in enumerate(events):
        frames = (bounds[k + 1] if k + 1 < len(events) else n_frames) - bounds[k]
        chars = list(unicodedata.normalize("NFD", name)) or [" "]
        ids = [s for c in chars for s in (c, "_")]
        symbols += ids
        durations += [frames // len(ids) + (1 if j < frames % len(ids) else 0) for j in range(len(ids))]
    return symbols + ["$"], durations + [0]


def _frames(mel: np.ndarray, t: int) -> np.ndarray:
    """Exactly t frames: cut, or the last frame repeated (durations may cover a frame more)."""
    mel = mel[:t]
    return np.pad(mel, ((0, t - len(mel)), (0, 0)), mode="edge") if len(mel) < t else mel


def cepstra(mel: np.ndarray, n: int = 20) -> np.ndarray:
    """Log-mel (T, n_mels) -> cepstral coefficients 1..n (DCT-II), normalised per coefficient
    over the utterance: what is said, less who says it and through what channel."""
    m = mel.shape[1]
    basis = np.cos(np.pi / m * (np.arange(m)[None, :] + 0.5) * np.arange(1, n + 1)[:, None])
    c = mel.astype(np.float64) @ basis.T
    return (c - c.mean(0)) / (c.std(0) + 1e-5)


def dtw_path(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cheapest monotonic path from (0, 0) to (N-1, M-1) through a cost matrix (N, M), with
    steps (1, 0), (0, 1) and (1, 1); the recursion runs one anti-diagonal at a time."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for k in range(2, n + m + 1):                     # cells (i, j), 1-based, with i + j = k
        i = np.arange(max(1, k - m), min(n, k - 1) + 1)
        j = k - i
        acc[i, j] = cost[i - 1, j - 1] + np.minimum(np.minimum(acc[i - 1, j - 1], acc[i - 1, j]), acc[i, j - 1])
    i, j, path = n, m, [(n - 1, m - 1)]
    while i > 1 or j > 1:
        steps = ((acc[i - 1, j - 1], i - 1, j - 1), (acc[i - 1, j], i - 1, j), (acc[i, j - 1], i, j - 1))
        _, i, j = min(steps, key=lambda s: s[0])
        path.append((i - 1, j - 1))
    a, b = np.array(path[::-1]).T
    return a, b


def transfer_durations(durations: list[int], ref_mel: np.ndarray, mel: np.ndarray) -> list[int]:
    """Phoneme durations of a reference recording (frames of `ref_mel`) -> durations of the same
    phonemes in another recording of the same text (`mel`), by DTW; the total is len(mel)."""
    durations = [int(d) for d in durations]
    a, b = cepstra(_frames(ref_mel, sum(durations))), cepstra(mel)
    cost = np.sqrt(np.maximum((a ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None, :] - 2 * a @ b.T, 0.0))
    ref_frames, frames = dtw_path(cost)
    phoneme_of = np.repeat(np.arange(len(durations)), durations)   # reference frame -> phoneme
    first = np.full(len(mel), -1)
    for r, f in zip(ref_frames[::-1], frames[::-1]):              # each frame takes its first reference frame
        first[f] = r
    return np.bincount(phoneme_of[first], minlength=len(durations)).astype(int).tolist()


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
    below = dprime[:, lag_min:] < threshold
    rows = np.nonzero((energy0 >= 1e-6) & below.any(axis=1))[0]
    tau = below[rows].argmax(axis=1) + lag_min                         # the first dip under the threshold
    while True:                                                        # ... followed down to its minimum
        step = (tau + 1 <= lag_max)
        step[step] = dprime[rows[step], tau[step] + 1] < dprime[rows[step], tau[step]]
        if not step.any():
            break
        tau = tau + step
    refined = tau.astype(np.float64)
    inner = (tau >= 1) & (tau < lag_max)                               # parabolic refinement
    a, b, c = (dprime[rows[inner], tau[inner] + k] for k in (-1, 0, 1))
    denom = a - 2 * b + c
    safe = np.abs(denom) > 1e-12
    refined[inner] += np.where(safe, 0.5 * (a - c) / np.where(safe, denom, 1.0), 0.0)
    f0[rows] = rate / refined
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


def utterance_features(x: np.ndarray, durations: list[int], fbank: np.ndarray | None = None, *,
                       mel: np.ndarray | None = None) -> dict:
    """Audio (22,050 Hz, a whole number of hops long) and durations -> mel (T, 80), and log-F0 and
    energy per phoneme. T = sum(durations). `mel`: the audio's log-mel, when already computed."""
    t = int(sum(durations))
    mel = _frames(log_mel(x, TTS_MEL, fbank) if mel is None else mel, t)
    f0 = yin_f0(x, TTS_MEL.sample_rate, TTS_MEL.hop, n_frames=t)
    voiced = f0 > 0
    log_f0 = np.where(voiced, np.log(np.maximum(f0, 1.0)), 0.0)
    energy = np.log(np.exp(mel).sum(axis=1) + 1e-5)              # log of the mel power, per frame
    return {"mel": mel.astype(np.float16), "pitch": per_phoneme(log_f0, durations, voiced),
            "voiced": per_phoneme(voiced.astype(np.float32), durations) > 0.5,
            "energy": per_phoneme(energy, durations)}


def teacher_symbols(item: dict, id_to_symbol: dict[int, str]) -> list[str]:
    return [id_to_symbol.get(int(i), "_") for i in item["phoneme_ids"]]


__all__ = ["TTS_MEL", "align_durations", "cepstra", "dtw_path", "espeak_durations", "transfer_durations", "yin_f0", "per_phoneme", "utterance_features", "teacher_symbols",
           "mel_filterbank"]
