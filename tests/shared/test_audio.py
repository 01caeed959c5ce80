"""Audio in: every format we claim decodes, resampling keeps what it should, loudness lands on
target, the numpy log-mel (serving) matches the torch one (training), and bad audio gets an
error that says what to send."""
import io
import struct

import numpy as np
import pytest
import soundfile as sf

from omniforge_shared.audio import (AudioError, AudioLimits, MelConfig, decode_audio, ffmpeg_available, log_mel,
                                    mel_filterbank,
                                    prepare_audio, resample, TARGET_LUFS)


def tone(freq=440.0, rate=16_000, seconds=1.0, amp=0.3, channels=1):
    t = np.arange(int(rate * seconds)) / rate
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x] * channels, 1) if channels > 1 else x


def encode(x, rate, fmt="WAV", subtype=None):
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def speechlike(rate=16_000, seconds=1.5, seed=0):
    """Harmonics under a moving formant with pauses: a signal with the spectral shape of speech."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    f0 = 120 + 30 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 20)) * (np.sin(2 * np.pi * 3 * t) > -0.3)
    return (0.2 * x + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("FLAC", None), ("OGG", "VORBIS")])
def test_native_formats_decode_to_the_same_signal(fmt, subtype):
    x = tone(rate=22_050)
    samples, rate = decode_audio(encode(x, 22_050, fmt, subtype))
    assert rate == 22_050 and samples.shape[1] == 1
    n = min(len(x), len(samples))
    tol = 0.05 if fmt == "OGG" else 1e-3                  # Vorbis is lossy
    assert np.abs(samples[:n, 0] - x[:n]).mean() < tol


def test_stereo_mixes_down_and_resampling_keeps_the_pitch():
    x = tone(1000.0, rate=44_100, channels=2)
    y = prepare_audio(encode(x, 44_100), 16_000, normalise=False)
    assert len(y) == 16_000
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) - 1000) <= 1           # 1 Hz bins over one second


def test_resampler_is_band_limited():
    """A 7 kHz tone at 44.1 kHz has no place at 8 kHz: a proper resampler removes it, linear
    interpolation folds it back to 1 kHz."""
    x = tone(7000.0, rate=44_100)
    y = resample(x, 44_100, 8_000)
    naive = np.interp(np.arange(8_000) * 44_100 / 8_000, np.arange(len(x)), x)
    assert np.sqrt(np.mean(y ** 2)) < 0.01 < np.sqrt(np.mean(naive ** 2))


def test_loudness_is_normalised_to_target():
    import pyloudnorm

    for amp in (0.01, 0.5):
        y = prepare_audio(encode(speechlike() * amp / 0.2, 16_000), 16_000)
        assert abs(pyloudnorm.Meter(16_000).integrated_loudness(y.astype(np.float64)) - TARGET_LUFS) < 0.5
        assert np.abs(y).max() <= 0.99


@pytest.mark.parametrize("cfg", [MelConfig(), MelConfig(sample_rate=22_050, n_fft=1024, hop=256, n_mels=80, fmax=8000)])
def test_numpy_log_mel_matches_torch(cfg):
    import torch

    from omniforge_training.data.audio_features import LogMel

    x = speechlike(cfg.sample_rate)
    ours = log_mel(x, cfg)
    ref = LogMel(cfg)(torch.from_numpy(x)).numpy()
    assert ours.shape == ref.shape == (1 + len(x) // cfg.hop, cfg.n_mels)
    assert np.abs(ours - ref).max() < 1e-3
    batch = LogMel(cfg)(torch.from_numpy(np.stack([x, x])))
    assert batch.shape == (2,) + ref.shape
    short = x[:10]                                                 # shorter than a window: still framed alike
    assert np.abs(log_mel(short, cfg) - LogMel(cfg)(torch.from_numpy(short)).numpy()).max() < 1e-3


def test_a_warped_filterbank_hears_a_voice_as_if_resampled():
    cfg = MelConfig()
    lowered = mel_filterbank(cfg, 0.8)
    for f in (500.0, 1000.0, 2500.0):          # a tone read through warp 0.8 lands where a tone 0.8 lower does
        assert log_mel(tone(f), cfg, lowered).mean(0).argmax() == log_mel(tone(0.8 * f), cfg).mean(0).argmax()
    x = speechlike()
    slowed = resample(x, 16_000, 20_000)        # the same samples played at 16 kHz: every frequency x0.8
    warped, real = log_mel(x, cfg, lowered).mean(0), log_mel(slowed, cfg).mean(0)
    band = slice(5, 70)                          # below the band edge that resampling leaves empty
    assert np.corrcoef(warped[band], real[band])[0, 1] > 0.98


def wav_header(rate, channels, data_bytes, bits=16):
    block = channels * bits // 8
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt " +
            struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, bits) + b"data" + struct.pack("<I", data_bytes))


@pytest.mark.parametrize("data,match,status", [
    (b"", "empty", 400),
    (b"this is plain text, not a recording", "ffmpeg" if not ffmpeg_available() else "not audio", 415),
    (wav_header(1_000_000, 1, 2000) + b"\0" * 2000, "sample rate is 1000000 Hz; send 4000-192000", 400),
    (encode(tone(channels=8), 16_000), "8 channels; send mono or stereo", 400),
    (encode(np.zeros(16_000, np.float32), 16_000), "silent", 400),
    (encode(np.full(1600, np.nan, np.float32), 16_000, "WAV", "FLOAT"), "NaN", 400),
    (encode(tone(seconds=3.0), 16_000), "lasts 3 s; send at most 2 s", 413),
    (b"\0" * 3000, "ffmpeg|not audio", 415),
])
def test_bad_audio_is_refused_with_what_to_send(data, match, status):
    with pytest.raises(AudioError, match=match) as e:
        prepare_audio(data, 16_000, limits=AudioLimits(max_seconds=2.0))
    assert e.value.status == status


def test_too_many_bytes_is_413():
    with pytest.raises(AudioError, match="at most 1 MB") as e:
        decode_audio(b"\0" * (2**20 + 1), AudioLimits(max_bytes=2**20))
    assert e.value.status == 413


def test_a_header_that_overstates_its_length_decodes_what_is_there():
    pcm = (tone(seconds=0.5) * 32767).astype("<i2").tobytes()
    lying = wav_header(16_000, 1, 10 * len(pcm)) + pcm             # says 5 s, holds 0.5 s
    samples, rate = decode_audio(lying)
    assert rate == 16_000 and abs(len(samples) - 8_000) <= 1
