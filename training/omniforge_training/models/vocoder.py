"""A Vocos-style vocoder: log-mel frames -> waveform through a Fourier head, no upsampling stack.

    mel (B, T, 80) -> conv embed -> N ConvNeXt blocks at frame rate
      -> linear -> log-magnitude and phase of each STFT frame (n_fft/2+1 bins each)
      -> inverse STFT written as a ConvTranspose1d with a fixed windowed Fourier basis, divided by
         the summed squared window (`torch.istft` does not export to ONNX; this does)

Everything runs at the frame rate (86 frames/s at hop 256), so the network costs a fraction of
an upsampling HiFi-GAN; the output length is (T - 1) * hop samples, centred like the mel frames.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class VocoderConfig:
    n_mels: int = 80
    dim: int = 256
    intermediate: int = 768
    layers: int = 8
    kernel: int = 7
    n_fft: int = 1024
    hop: int = 256
    sample_rate: int = 22_050
    fmax: float = 8000.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "VocoderConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class ConvNeXt(nn.Module):
    def __init__(self, dim: int, intermediate: int, kernel: int, scale: float) -> None:
        super().__init__()
        self.dw = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, intermediate)
        self.down = nn.Linear(intermediate, dim)
        self.gamma = nn.Parameter(torch.full((dim,), scale))

    def forward(self, x):                     # (B, dim, T)
        y = self.dw(x).transpose(1, 2)
        y = self.down(F.gelu(self.up(self.norm(y))))
        return x + (self.gamma * y).transpose(1, 2)


class InverseSTFT(nn.Module):
    """(real, imag) (B, F, T) -> (B, (T-1)*hop) samples: overlap-add of windowed inverse DFTs, the
    `center=True` padding cut off."""

    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)          # periodic Hann
        k = np.arange(n_fft // 2 + 1)[:, None]
        n = np.arange(n_fft)[None, :]
        scale = np.where((k == 0) | (k == n_fft // 2), 1.0, 2.0) / n_fft              # one-sided spectrum
        cos = scale * np.cos(2 * np.pi * k * n / n_fft) * window
        sin = -scale * np.sin(2 * np.pi * k * n / n_fft) * window
        basis = np.concatenate([cos, sin])[:, None, :].astype(np.float32)            # (2F, 1, n_fft)
        self.register_buffer("basis", torch.from_numpy(basis), persistent=False)
        self.register_buffer("window_sq", torch.from_numpy((window ** 2).astype(np.float32))[None, None, :],
                             persistent=False)

    def forward(self, real, imag):
        spec = torch.cat([real, imag], dim=1)                                         # (B, 2F, T)
        y = F.conv_transpose1d(spec, self.basis, stride=self.hop)                     # (B, 1, (T-1)*hop + n_fft)
        ones = torch.ones(1, 1, spec.shape[-1], device=spec.device, dtype=spec.dtype)
        norm = F.conv_transpose1d(ones, self.window_sq, stride=self.hop)
        pad = self.n_fft // 2
        y = y[..., pad:-pad] / norm[..., pad:-pad].clamp(min=1e-8)
        return y[:, 0]


class Vocoder(nn.Module):
    def __init__(self, cfg: VocoderConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embed = nn.Conv1d(cfg.n_mels, cfg.dim, 7, padding=3)
        self.norm = nn.LayerNorm(cfg.dim)
        self.blocks = nn.ModuleList(ConvNeXt(cfg.dim, cfg.intermediate, cfg.kernel, 1.0 / cfg.layers)
                                    for _ in range(cfg.layers))
        self.final = nn.LayerNorm(cfg.dim)
        bins = cfg.n_fft // 2 + 1
        self.head = nn.Linear(cfg.dim, 2 * bins)
        self.istft = InverseSTFT(cfg.n_fft, cfg.hop)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (B, T, n_mels) -> waveform (B, (T-1) * hop)."""
        x = self.embed(mel.transpose(1, 2))
        x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        mag, phase = self.head(self.final(x.transpose(1, 2))).transpose(1, 2).chunk(2, dim=1)
        mag = torch.exp(mag.clamp(max=6.0))
        return self.istft(mag * torch.cos(phase), mag * torch.sin(phase))
