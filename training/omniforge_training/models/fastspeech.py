"""A slim FastSpeech 2 acoustic model: phoneme ids -> log-mel frames, non-autoregressive.

    ids (B, N) -> embedding + speaker -> encoder (FFT blocks: self-attention + conv feed-forward)
      -> + speaker again (multi-speaker models: the voice reaches the predictors and the decoder
         directly, not only through the encoder)
      -> variance adaptor: log-duration, pitch and energy predicted per phoneme (FastPitch-style:
         pitch and energy are averaged over each phoneme's frames, embedded by a 1-D convolution
         and added back)
      -> length regulator (each phoneme repeated for its duration; `speed` divides durations)
      -> decoder (FFT blocks over frames) -> linear -> 80 log-mel bins (22,050 Hz, hop 256)

For export the model is split where the lengths become data-dependent: `encode` (ids -> hidden
states and durations) and `decode` (frame-rate hidden states -> mel); the length regulator in
between is an index gather the service does in numpy. The kernel-3 feed-forward convolutions
keep the decoder cheap enough for CPU serving.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .conformer import sinusoid as positions      # the same sinusoidal positions


@dataclass
class TTSConfig:
    n_symbols: int = 136
    n_speakers: int = 1
    speaker_out: bool = False      # a second speaker embedding added to the encoder's output
    d_model: int = 192
    n_heads: int = 2
    enc_layers: int = 4
    dec_layers: int = 4
    ff_dim: int = 768
    kernel: int = 3
    predictor_dim: int = 192
    dropout: float = 0.1
    n_mels: int = 80
    sample_rate: int = 22_050
    n_fft: int = 1024
    hop: int = 256
    fmax: float = 8000.0
    pitch_mean: float = 0.0        # log-F0 statistics of the training voices (pitch targets are standardised)
    pitch_std: float = 1.0
    energy_mean: float = 0.0
    energy_std: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TTSConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class FFTBlock(nn.Module):
    def __init__(self, cfg: TTSConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.heads = cfg.n_heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm1 = nn.LayerNorm(d)
        self.conv1 = nn.Conv1d(d, cfg.ff_dim, cfg.kernel, padding=cfg.kernel // 2)
        self.conv2 = nn.Conv1d(cfg.ff_dim, d, 1)
        self.norm2 = nn.LayerNorm(d)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, bias, keep):          # x (B, T, d); bias (B, 1, 1, T); keep (B, T, 1)
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax((q @ k.transpose(-1, -2)) / math.sqrt(d // self.heads) + bias, dim=-1)
        x = self.norm1(x + self.drop(self.proj((att @ v).transpose(1, 2).reshape(b, t, d))))
        y = self.conv2(F.relu(self.conv1((x * keep).transpose(1, 2)))).transpose(1, 2)
        return self.norm2(x + self.drop(y)) * keep


class VariancePredictor(nn.Module):
    def __init__(self, cfg: TTSConfig) -> None:
        super().__init__()
        p = cfg.predictor_dim
        self.conv1 = nn.Conv1d(cfg.d_model, p, 3, padding=1)
        self.norm1 = nn.LayerNorm(p)
        self.conv2 = nn.Conv1d(p, p, 3, padding=1)
        self.norm2 = nn.LayerNorm(p)
        self.out = nn.Linear(p, 1)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, keep):                # (B, N, d) -> (B, N)
        y = self.drop(self.norm1(F.relu(self.conv1((x * keep).transpose(1, 2))).transpose(1, 2)))
        y = self.drop(self.norm2(F.relu(self.conv2((y * keep).transpose(1, 2))).transpose(1, 2)))
        return self.out(y).squeeze(-1) * keep.squeeze(-1)


def _mask(lengths: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    keep = (torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]).float()
    return ((1.0 - keep) * -1e4)[:, None, None, :], keep[:, :, None]


class FastSpeech(nn.Module):
    def __init__(self, cfg: TTSConfig) -> None:
        super().__init__()
        self.config = cfg
        d = cfg.d_model
        self.embed = nn.Embedding(cfg.n_symbols, d, padding_idx=0)
        self.speaker = nn.Embedding(max(1, cfg.n_speakers), d)
        if cfg.speaker_out:
            self.speaker_out = nn.Embedding(max(1, cfg.n_speakers), d)
            nn.init.zeros_(self.speaker_out.weight)
        self.encoder = nn.ModuleList(FFTBlock(cfg) for _ in range(cfg.enc_layers))
        self.duration = VariancePredictor(cfg)
        self.pitch = VariancePredictor(cfg)
        self.energy = VariancePredictor(cfg)
        self.pitch_embed = nn.Conv1d(1, d, 3, padding=1)
        self.energy_embed = nn.Conv1d(1, d, 3, padding=1)
        self.decoder = nn.ModuleList(FFTBlock(cfg) for _ in range(cfg.dec_layers))
        self.mel = nn.Linear(d, cfg.n_mels)

    # ---- the two exported halves -----------------------------------------------------------------
    def encode(self, ids, lengths, speaker, pitch_shift=None):
        """ids (B, N), lengths (B,), speaker (B,) -> hidden (B, N, d) with pitch and energy added,
        log-durations (B, N), pitch (B, N), energy (B, N)."""
        n = ids.shape[1]
        bias, keep = _mask(lengths, n)
        x = self.embed(ids) + positions(n, self.config.d_model, ids.device)
        x = x + self.speaker(speaker)[:, None, :]
        for block in self.encoder:
            x = block(x, bias, keep)
        if self.config.speaker_out:
            x = x + self.speaker_out(speaker)[:, None, :] * keep
        logd = self.duration(x, keep)
        pitch = self.pitch(x, keep)
        if pitch_shift is not None:
            pitch = pitch + pitch_shift[:, None]
        energy = self.energy(x, keep)
        return self.add_variance(x, pitch, energy, keep), logd, pitch, energy

    def add_variance(self, x, pitch, energy, keep):
        x = x + self.pitch_embed(pitch[:, None, :]).transpose(1, 2) + self.energy_embed(energy[:, None, :]).transpose(1, 2)
        return x * keep

    def decode(self, frames, frame_lengths):
        """frames (B, T, d) regulated hidden states -> log-mel (B, T, n_mels)."""
        t = frames.shape[1]
        bias, keep = _mask(frame_lengths, t)
        x = frames + positions(t, self.config.d_model, frames.device) * keep
        for block in self.decoder:
            x = block(x, bias, keep)
        return self.mel(x) * keep

    # ---- training --------------------------------------------------------------------------------
    def forward(self, ids, lengths, speaker, durations, pitch, energy, mel_lengths):
        """Teacher forcing: ground-truth durations, pitch and energy go into the decoder path."""
        n = ids.shape[1]
        bias, keep = _mask(lengths, n)
        x = self.embed(ids) + positions(n, self.config.d_model, ids.device)
        x = x + self.speaker(speaker)[:, None, :]
        for block in self.encoder:
            x = block(x, bias, keep)
        if self.config.speaker_out:
            x = x + self.speaker_out(speaker)[:, None, :] * keep
        logd_hat = self.duration(x, keep)
        pitch_hat = self.pitch(x, keep)
        energy_hat = self.energy(x, keep)
        h = self.add_variance(x, pitch, energy, keep)
        frames = regulate(h, durations, int(mel_lengths.max()))
        return self.decode(frames, mel_lengths), logd_hat, pitch_hat, energy_hat


def regulate(h: torch.Tensor, durations: torch.Tensor, t: int) -> torch.Tensor:
    """(B, N, d), integer durations (B, N) -> (B, t, d): phoneme i repeated durations[i] times."""
    ends = durations.cumsum(1)                                          # (B, N)
    frame = torch.arange(t, device=h.device)[None, :, None]              # (1, t, 1)
    idx = (frame >= ends[:, None, :]).sum(-1).clamp(max=h.shape[1] - 1)   # (B, t)
    out = torch.gather(h, 1, idx[..., None].expand(-1, -1, h.shape[2]))
    keep = (torch.arange(t, device=h.device)[None, :] < ends[:, -1:]).float()[..., None]
    return out * keep
