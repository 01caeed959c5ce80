"""Audio in, for every service and recipe: decode, mix down, resample, normalise, and log-mel
features in numpy (the serving path; training computes the same features with `torch.stft`,
checked against these).

  decode_audio    bytes -> (samples (frames, channels) float32, sample rate); WAV / FLAC / OGG
                  through libsndfile (soundfile), MP3 / M4A / WebM through ffmpeg when installed
  prepare_audio   -> mono float32 at the model's rate (soxr, not linear interpolation), loudness
                  normalised (ITU-R BS.1770, pyloudnorm) with a peak guard
  log_mel         (samples,) -> (frames, n_mels) log-mel, centred frames, periodic Hann window

Bad input raises AudioError with a message that says what to send instead and the HTTP status
a gateway should answer with (400, 413 or 415).
"""
from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np

MAX_BYTES = 25 * 2**20
MAX_SECONDS = 600.0
MAX_CHANNELS = 2
MIN_RATE, MAX_RATE = 4_000, 192_000
NATIVE_FORMATS = ("WAV", "FLAC", "OGG")
FFMPEG_FORMATS = ("MP3", "M4A", "WebM")
TARGET_LUFS = -23.0
SILENCE_PEAK = 1e-4


class AudioError(ValueError):
    """Audio we will not use; `status` is the HTTP status that fits (400, 413 or 415)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class AudioLimits:
    max_bytes: int = MAX_BYTES
    max_seconds: float = MAX_SECONDS
    max_channels: int = MAX_CHANNELS

    def accepted(self) -> str:
        formats = ", ".join(NATIVE_FORMATS + (FFMPEG_FORMATS if ffmpeg_available() else ()))
        return (f"{formats}; at most {self.max_bytes // 2**20} MB, {self.max_seconds:g} s, {self.max_channels} "
                f"channels, {MIN_RATE}-{MAX_RATE} Hz")


def ffmpeg_available() -> bool:
    return shutil.which("ffmpeg") is not None


def decode_audio(data: bytes, limits: AudioLimits = AudioLimits()) -> tuple[np.ndarray, int]:
    """Bytes of an audio file -> (samples (frames, channels) float32 in [-1, 1], sample rate)."""
    if not data:
        raise AudioError(f"the upload is empty (0 bytes); send an audio file: {limits.accepted()}")
    if len(data) > limits.max_bytes:
        raise AudioError(f"the upload is {len(data) / 2**20:.1f} MB; send at most {limits.max_bytes // 2**20} MB",
                         status=413)
    import soundfile as sf

    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            _check_header(f.samplerate, f.channels, f.frames / max(f.samplerate, 1), limits)
            samples = f.read(dtype="float32", always_2d=True)
            rate = f.samplerate
    except sf.LibsndfileError:
        samples, rate = _decode_ffmpeg(data, limits)
    except RuntimeError as e:                    # soundfile raises this for some malformed headers
        raise AudioError(f"the audio could not be decoded ({e}); send {limits.accepted()}") from e
    if len(samples) == 0:
        raise AudioError(f"the audio holds no samples; send {limits.accepted()}")
    if len(samples) / rate > limits.max_seconds:   # a header that understated the length
        raise AudioError(f"the audio lasts {len(samples) / rate:.0f} s; send at most {limits.max_seconds:g} s "
                         "(or stream it)", status=413)
    if not np.isfinite(samples).all():
        raise AudioError("the audio has NaN or infinite samples; send finite samples in [-1, 1]")
    return samples, rate


def _check_header(rate: int, channels: int, seconds: float, limits: AudioLimits) -> None:
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(f"the sample rate is {rate} Hz; send {MIN_RATE}-{MAX_RATE} Hz")
    if not 1 <= channels <= limits.max_channels:
        raise AudioError(f"the audio has {channels} channels; send mono or stereo (at most {limits.max_channels})")
    if seconds > limits.max_seconds:
        raise AudioError(f"the audio lasts {seconds:.0f} s; send at most {limits.max_seconds:g} s (or stream it)",
                         status=413)


def _decode_ffmpeg(data: bytes, limits: AudioLimits) -> tuple[np.ndarray, int]:
    if not ffmpeg_available():
        raise AudioError(f"this is not audio we can read without ffmpeg; send {', '.join(NATIVE_FORMATS)} "
                         f"(or install ffmpeg for {', '.join(FFMPEG_FORMATS)})", status=415)
    rate = 48_000                                  # ffmpeg resamples whatever it finds to this, mono kept apart
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", "pipe:0", "-t", str(limits.max_seconds + 1),
           "-f", "f32le", "-acodec", "pcm_f32le", "-ac", "1", "-ar", str(rate), "pipe:1"]
    try:
        out = subprocess.run(cmd, input=data, capture_output=True, timeout=60)
    except subprocess.TimeoutExpired as e:
        raise AudioError("decoding took too long; send a shorter file") from e
    if out.returncode != 0 or not out.stdout:
        raise AudioError(f"this is not audio we can read; send {limits.accepted()}", status=415)
    return np.frombuffer(out.stdout, np.float32).reshape(-1, 1).copy(), rate


def to_mono(samples: np.ndarray) -> np.ndarray:
    return samples.mean(axis=1) if samples.ndim == 2 else samples


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Band-limited resampling (soxr, high quality)."""
    if rate == target:
        return x.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(x, rate, target, quality="HQ").astype(np.float32)


def normalise_loudness(x: np.ndarray, rate: int, target_lufs: float = TARGET_LUFS, peak: float = 0.99) -> np.ndarray:
    """Integrated loudness (BS.1770) to `target_lufs`; under 0.4 s, where its gating has no block,
    the RMS stands in. The gain is capped so no sample exceeds `peak`."""
    import pyloudnorm

    if np.abs(x).max() < SILENCE_PEAK:
        raise AudioError("the audio is silent; send audio with speech in it")
    loudness = -np.inf
    if len(x) >= int(0.4 * rate):
        loudness = pyloudnorm.Meter(rate).integrated_loudness(x.astype(np.float64))
    if not np.isfinite(loudness):                 # too short, or everything gated out
        loudness = 20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-12) - 0.691
    gain = 10 ** ((target_lufs - loudness) / 20)
    gain = min(gain, peak / float(np.abs(x).max()))
    return (x * gain).astype(np.float32)


def prepare_audio(data: bytes, rate: int = 16_000, *, limits: AudioLimits = AudioLimits(),
                  normalise: bool = True) -> np.ndarray:
    """Bytes -> mono float32 at `rate`, loudness normalised: what the speech models take."""
    samples, sr = decode_audio(data, limits)
    x = resample(to_mono(samples), sr, rate)
    if normalise:
        return normalise_loudness(x, rate)          # refuses silence itself
    if np.abs(x).max() < SILENCE_PEAK:
        raise AudioError("the audio is silent; send audio with speech in it")
    return x


# ---- log-mel features ----------------------------------------------------------------------------

@dataclass(frozen=True)
class MelConfig:
    sample_rate: int = 16_000
    n_fft: int = 400              # 25 ms at 16 kHz
    hop: int = 160                # 10 ms
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float | None = None     # None = Nyquist
    log_floor: float = 1e-5

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(cfg: MelConfig, warp: float = 1.0) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) triangular filters on the HTK mel scale, unit peak.

    `warp` reads the spectrum as if every frequency were multiplied by it (vocal-tract length
    normalisation): filters built with warp 0.8 see a voice as the plain filters see the same voice
    resampled 0.8 lower, at no extra cost: the STFT is shared, only the filters move."""
    fmax = cfg.fmax or cfg.sample_rate / 2
    freqs = np.linspace(0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(cfg.fmin), hz_to_mel(fmax), cfg.n_mels + 2)) / warp
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / (mid - lo)
    down = (hi - freqs[None]) / (hi - mid)
    return np.clip(np.minimum(up, down), 0, None).T.astype(np.float32)


def hann(n: int) -> np.ndarray:
    """The periodic Hann window (torch.hann_window's default)."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


def power_spectrum(x: np.ndarray, cfg: MelConfig = MelConfig()) -> np.ndarray:
    """(samples,) float -> (frames, n_fft // 2 + 1) float32: 1 + len // hop centred frames (reflect padded)."""
    x = np.asarray(x, dtype=np.float32)
    pad = cfg.n_fft // 2
    if len(x) <= pad:
        x = np.pad(x, (0, pad + 1 - len(x)))
    x = np.pad(x, (pad, pad), mode="reflect")
    n_frames = 1 + (len(x) - cfg.n_fft) // cfg.hop
    frames = np.lib.stride_tricks.as_strided(x, (n_frames, cfg.n_fft), (x.strides[0] * cfg.hop, x.strides[0]))
    return (np.abs(np.fft.rfft(frames * hann(cfg.n_fft), axis=1)) ** 2).astype(np.float32)


def mel_of_power(power: np.ndarray, cfg: MelConfig, fbank: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(power @ fbank, cfg.log_floor)).astype(np.float32)


def log_mel(x: np.ndarray, cfg: MelConfig = MelConfig(), fbank: np.ndarray | None = None) -> np.ndarray:
    """(samples,) float -> (frames, n_mels) float32: 1 + len // hop centred frames (reflect padded)."""
    return mel_of_power(power_spectrum(x, cfg), cfg, mel_filterbank(cfg) if fbank is None else fbank)
