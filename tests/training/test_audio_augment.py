"""Augmentations do what their names say, and the same generator gives the same result."""
import numpy as np
import torch

from omniforge_training.data.audio_augment import (AugmentConfig, augment, mulaw, pitch_warp, spec_augment, speed,
                                                   telephone)

RATE = 16_000


def tone(freq=440.0, seconds=1.0):
    t = np.arange(int(RATE * seconds)) / RATE
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def band_energy(x, lo, hi):
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / RATE)
    return spec[(f >= lo) & (f < hi)].sum() / spec.sum()


def test_speed_changes_length_and_pitch_warp_keeps_it():
    x = tone()
    assert abs(len(speed(x, 1.1)) - len(x) / 1.1) < 20
    y = pitch_warp(x, 1.05, RATE)
    assert len(y) == len(x)
    peak = np.fft.rfftfreq(len(y), 1 / RATE)[np.argmax(np.abs(np.fft.rfft(y)))]
    assert 450 < peak < 475                                  # 440 Hz moved up ~5%


def test_telephone_band_limits_and_mulaw_round_trips():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(RATE).astype(np.float32) * 0.1
    phone = telephone(noise, RATE)
    assert band_energy(noise, 4000, 8000) > 0.4 and band_energy(phone, 4000, 8000) < 0.01
    x = np.linspace(-0.9, 0.9, 1000).astype(np.float32)
    assert np.abs(mulaw(x) - x).max() < 0.03


def test_augment_is_deterministic_per_generator_and_stays_in_range():
    x = tone(220, 1.5)
    cfg = AugmentConfig(p_speed=1, p_room=1, p_noise=1, p_phone=0.5)
    a = augment(x, np.random.default_rng([1, 2]), cfg)
    b = augment(x, np.random.default_rng([1, 2]), cfg)
    c = augment(x, np.random.default_rng([1, 3]), cfg)
    assert np.array_equal(a, b) and not (len(a) == len(c) and np.allclose(a, c))
    assert np.abs(a).max() <= 0.99 and np.isfinite(a).all()


def test_spec_augment_masks_only_real_frames():
    feats = torch.randn(2, 100, 80)
    before = feats.clone()
    spec_augment(feats, torch.tensor([100, 60]), torch.Generator().manual_seed(0), AugmentConfig())
    assert (feats != before).any()
    assert torch.equal(feats[1, 60:], before[1, 60:])


def test_pitch_warps_span_the_configured_range_both_ways():
    # only the warp on: a 200 Hz tone comes out between 200 * low and 200 * high, and a man's
    # 120 Hz can be taken up to a woman's range (x1.3 -> 156 Hz) as well as down
    cfg = AugmentConfig(p_speed=0, p_pitch=1, p_room=0, p_colour=0, p_noise=0, p_phone=0, gain_db=(0, 0),
                        pitch=(0.82, 1.3))
    x = tone(200, 0.6)
    f = np.fft.rfftfreq(len(x), 1 / RATE)
    peaks = [f[np.argmax(np.abs(np.fft.rfft(augment(x, np.random.default_rng([7, k]), cfg))))] for k in range(40)]
    assert 0.8 * 200 <= min(peaks) and max(peaks) <= 1.32 * 200
    assert min(peaks) < 0.9 * 200 and max(peaks) > 1.18 * 200
    assert len(augment(x, np.random.default_rng(1), cfg)) == len(x)
