"""Log-mel features in torch for training, the same numbers as the serving path's numpy
`omniforge_shared.audio.log_mel` (one filterbank, the same window and framing; a parity test
holds them together)."""
from __future__ import annotations

import torch

from omniforge_shared.audio import MelConfig, mel_filterbank


class LogMel(torch.nn.Module):
    """(B, samples) or (samples,) float -> (B, frames, n_mels): 1 + samples // hop frames."""

    def __init__(self, cfg: MelConfig = MelConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("fbank", torch.from_numpy(mel_filterbank(cfg)), persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeeze = x.dim() == 1
        x = x[None] if squeeze else x
        pad = self.cfg.n_fft // 2
        if x.shape[-1] <= pad:                   # reflect padding needs more samples than it pads
            x = torch.nn.functional.pad(x, (0, pad + 1 - x.shape[-1]))
        spec = torch.stft(x, self.cfg.n_fft, hop_length=self.cfg.hop, window=self.window, center=True,
                          pad_mode="reflect", return_complex=True)
        power = spec.real ** 2 + spec.imag ** 2                       # (B, F, frames)
        mel = torch.clamp(power.transpose(1, 2) @ self.fbank, min=self.cfg.log_floor).log()
        return mel[0] if squeeze else mel
