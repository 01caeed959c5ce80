"""Conformer-CTC speech recognizer over characters.

    log-mel (B, T, 80) -> 2 strided convolutions (4x fewer frames, 40 ms each)
      -> N conformer blocks (half feed-forward, self-attention, convolution, half feed-forward)
      -> linear -> CTC log-probabilities over blank + characters

Characters need the 4x subsampling (25 frames/s): English speech runs at up to ~15 characters a
second, and CTC needs at least one frame per character (plus one between repeated ones). The
second convolution is depthwise-separable, so the subsampling costs little beside the encoder.
Positions are sinusoidal, added after subsampling; attention takes a padding mask, so a batch of
different lengths gives each utterance what it would get alone.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

BLANK = 0
CHARS = " '" + "abcdefghijklmnopqrstuvwxyz"      # id = index + 1; 0 is the CTC blank


@dataclass
class ASRConfig:
    n_mels: int = 80
    sample_rate: int = 16_000
    n_fft: int = 400
    hop: int = 160
    d_model: int = 144
    n_layers: int = 8
    n_heads: int = 4
    ff_mult: int = 4
    conv_kernel: int = 15
    subsample_channels: int = 64
    dropout: float = 0.1
    chars: str = CHARS
    subsampling: int = field(default=4, init=False)

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("subsampling")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ASRConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "subsampling"})


def encode_text(text: str, chars: str = CHARS) -> list[int]:
    table = {c: i + 1 for i, c in enumerate(chars)}
    return [table[c] for c in text if c in table]


def out_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Frames after the two stride-2 convolutions (kernel 3, padding 1)."""
    for _ in range(2):
        lengths = torch.div(lengths - 1, 2, rounding_mode="floor") + 1
    return lengths


class Dropout(nn.Module):
    """Inverted dropout whose keep mask comes from random bytes, eight to one 64-bit draw: on CPU,
    `nn.Dropout`'s Bernoulli draw was a fifth of a training step's time (11.4 ms for a (20, 124,
    576) activation on two threads; its mask here 1.6 ms). The drop rate is rounded to 1/256
    (0.1 -> 0.1016) and the scale follows it."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.threshold = round(p * 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return x
        n = x.numel()
        draws = torch.randint(-2 ** 63, 2 ** 63 - 1, ((n + 7) // 8,), dtype=torch.int64, device=x.device)
        keep = draws.view(torch.uint8)[:n].view(x.shape) >= self.threshold
        return x * keep * (256.0 / (256 - self.threshold))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Subsampling(nn.Module):
    def __init__(self, cfg: ASRConfig) -> None:
        super().__init__()
        c = cfg.subsample_channels
        self.conv1 = nn.Conv2d(1, c, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(c, c, 3, stride=2, padding=1, groups=c)
        self.pw = nn.Conv2d(c, c, 1)
        freq = (cfg.n_mels + 3) // 4
        self.out = nn.Linear(c * freq, cfg.d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:   # (B, T, F) -> (B, T/4, d)
        # channels last: the depthwise convolution's backward pass runs ~3x faster on CPU in this layout
        x = F.relu(self.conv1(x.unsqueeze(1).contiguous(memory_format=torch.channels_last)))
        if lengths is not None:            # what the first stride made of padding must not reach the second
            half = (lengths + 1) // 2
            x = x * (torch.arange(x.shape[2], device=x.device)[None, :] < half[:, None]).to(x.dtype)[:, None, :, None]
        x = F.relu(self.pw(self.dw(x)))
        b, c, t, f = x.shape
        return self.out(x.permute(0, 2, 1, 3).reshape(b, t, c * f))


def sinusoid(t: int, d: int, device) -> torch.Tensor:
    pos = torch.arange(t, device=device, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(t, d, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe


class FeedForward(nn.Module):
    def __init__(self, d: int, mult: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.up = nn.Linear(d, d * mult)
        self.down = nn.Linear(d * mult, d)
        self.drop = Dropout(dropout)

    def forward(self, x):
        return self.drop(self.down(self.drop(F.silu(self.up(self.norm(x))))))


class SelfAttention(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.heads = heads
        self.drop = Dropout(dropout)

    def forward(self, x, bias):                                  # bias: (B, 1, 1, T) 0 / -inf-ish
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(d // self.heads)) + bias
        y = torch.softmax(att, dim=-1) @ v
        return self.drop(self.proj(y.transpose(1, 2).reshape(b, t, d)))


class MaskedNorm(nn.Module):
    """Normalises (B, C, T) over channels and the real frames of each utterance (one group), so
    padding never changes an utterance's statistics; GroupNorm(1, C)'s parameters."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x, keep):                                  # keep: (B, 1, T)
        n = keep.sum((1, 2), keepdim=True).clamp(min=1.0) * x.shape[1]
        mean = (x * keep).sum((1, 2), keepdim=True) / n
        var = (((x - mean) * keep) ** 2).sum((1, 2), keepdim=True) / n
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight[None, :, None] + self.bias[None, :, None]


class ConvModule(nn.Module):
    def __init__(self, d: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.pw1 = nn.Conv1d(d, 2 * d, 1)
        self.dw = nn.Conv1d(d, d, kernel, padding=kernel // 2, groups=d)
        self.norm2 = MaskedNorm(d)            # batch statistics (BatchNorm) would see the padding
        self.pw2 = nn.Conv1d(d, d, 1)
        self.drop = Dropout(dropout)

    def forward(self, x, keep):                                  # keep: (B, T, 1) 1 for real frames
        # the pointwise convolutions run as matrix products on (B, T, C): no transposes around them
        y = F.glu(F.linear(self.norm(x), self.pw1.weight[..., 0], self.pw1.bias), dim=-1) * keep
        k = keep.transpose(1, 2)                                 # padded frames must not leak into the convolution
        y = F.silu(self.norm2(self.dw(y.transpose(1, 2)), k)).transpose(1, 2)
        return self.drop(F.linear(y, self.pw2.weight[..., 0], self.pw2.bias))


class ConformerBlock(nn.Module):
    def __init__(self, cfg: ASRConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.ff1 = FeedForward(d, cfg.ff_mult, cfg.dropout)
        self.att = SelfAttention(d, cfg.n_heads, cfg.dropout)
        self.conv = ConvModule(d, cfg.conv_kernel, cfg.dropout)
        self.ff2 = FeedForward(d, cfg.ff_mult, cfg.dropout)
        self.norm = nn.LayerNorm(d)

    def forward(self, x, bias, keep):
        x = x + 0.5 * self.ff1(x)
        x = x + self.att(x, bias)
        x = x + self.conv(x, keep)
        x = x + 0.5 * self.ff2(x)
        return self.norm(x)


def normalise_features(feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per-utterance mean (per mel bin) and variance (overall) over the real frames: a microphone's
    colour and level mostly cancel; padding stays zero."""
    mask = (torch.arange(feats.shape[1], device=feats.device)[None, :] < lengths[:, None]).to(feats.dtype)[..., None]
    n = mask.sum(1, keepdim=True).clamp(min=1.0)
    mean = (feats * mask).sum(1, keepdim=True) / n
    centred = (feats - mean) * mask
    var = (centred ** 2).sum((1, 2), keepdim=True) / (n * feats.shape[2])
    return centred / torch.sqrt(var + 1e-5)


class ConformerCTC(nn.Module):
    def __init__(self, cfg: ASRConfig) -> None:
        super().__init__()
        self.config = cfg
        self.subsample = Subsampling(cfg)
        self.drop = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(ConformerBlock(cfg) for _ in range(cfg.n_layers))
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B, T, n_mels) log-mel, lengths (B,) frames -> (log-probs (B, T/4, V), out lengths (B,))."""
        x = self.subsample(normalise_features(feats, lengths), lengths)
        t = x.shape[1]
        x = self.drop(x + sinusoid(t, self.config.d_model, x.device))
        olens = out_lengths(lengths)
        keep = (torch.arange(t, device=x.device)[None, :] < olens[:, None]).to(x.dtype)
        bias = ((1.0 - keep) * -1e4)[:, None, None, :]
        keep = keep[:, :, None]
        for block in self.blocks:
            x = block(x, bias, keep)
        return F.log_softmax(self.head(x), dim=-1), olens

    def ctc_loss(self, feats, lengths, targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
        logp, olens = self(feats, lengths)
        return F.ctc_loss(logp.transpose(0, 1), targets, olens, target_lengths, blank=BLANK, reduction="mean",
                          zero_infinity=True)
