"""The audio tower: speech -> a unit vector in the shared latent space of an image-text model.

    log-mel (B, T, 80) -> the recognizer's conformer encoder (its CTC head dropped; frozen, or its
    top `tune_layers` blocks trained) -> `head_layers` transformer blocks of its own -> attention
    pooling (one learned query over the real frames) -> LayerNorm -> Linear(d, embed_dim) -> unit length

The encoder already turns sound into something close to letters, so the tower learns little more
than how a sentence's letters map to the text tower's vector for it. It is trained against the
frozen text tower of one image-text model (`AudioTowerConfig.space` names it): its vectors are
comparable with that model's text and image vectors and with nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .conformer import ASRConfig, ConformerBlock, ConformerCTC, normalise_features, out_lengths, sinusoid


@dataclass
class AudioTowerConfig:
    asr: ASRConfig = field(default_factory=ASRConfig)
    embed_dim: int = 256
    head_layers: int = 1
    dropout: float = 0.1

    def to_dict(self) -> dict:
        return {"asr": self.asr.to_dict(), "embed_dim": self.embed_dim, "head_layers": self.head_layers,
                "dropout": self.dropout}

    @classmethod
    def from_dict(cls, d: dict) -> "AudioTowerConfig":
        return cls(asr=ASRConfig.from_dict(d["asr"]), **{k: v for k, v in d.items() if k in ("embed_dim", "head_layers",
                                                                                                 "dropout")})


class AttentionPool(nn.Module):
    """One learned query attends over the real frames: (B, T, d), keep (B, T) -> (B, d)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(d))
        self.key = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        scores = (self.key(x) @ self.query) / x.shape[-1] ** 0.5 + (1.0 - keep) * -1e4
        return (F.softmax(scores, dim=1)[..., None] * x).sum(1)


class AudioTower(nn.Module):
    def __init__(self, cfg: AudioTowerConfig) -> None:
        super().__init__()
        self.config = cfg
        a = cfg.asr
        self.subsample = ConformerCTC(a).subsample          # same module shapes as the recognizer's
        self.blocks = nn.ModuleList(ConformerBlock(a) for _ in range(a.n_layers))
        head_cfg = ASRConfig.from_dict({**a.to_dict(), "dropout": cfg.dropout})
        self.head_blocks = nn.ModuleList(ConformerBlock(head_cfg) for _ in range(cfg.head_layers))
        self.pool = AttentionPool(a.d_model)
        self.norm = nn.LayerNorm(a.d_model)
        self.proj = nn.Linear(a.d_model, cfg.embed_dim)

    def load_recognizer(self, state: dict) -> None:
        """Copies a ConformerCTC state dict's subsampling and blocks (its CTC head is not used)."""
        mine = {k: v for k, v in state.items() if k.startswith(("subsample.", "blocks."))}
        try:
            missing, unexpected = self.load_state_dict(mine, strict=False)
        except RuntimeError as e:                  # shapes differ: another d_model or kernel
            raise ValueError(f"the recognizer's weights do not fit this tower ({str(e).splitlines()[1].strip()}); "
                             "build the tower with the recognizer's config") from None
        if unexpected or any(k.startswith(("subsample.", "blocks.")) for k in missing):
            raise ValueError(f"the recognizer's weights do not fit this tower (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")

    def freeze(self, tune_layers: int) -> list[nn.Parameter]:
        """Freezes the encoder but its top `tune_layers` blocks; returns the parameters left to train."""
        n = len(self.blocks)
        for p in self.subsample.parameters():
            p.requires_grad_(False)
        for i, b in enumerate(self.blocks):
            for p in b.parameters():
                p.requires_grad_(i >= n - tune_layers)
        return [p for p in self.parameters() if p.requires_grad]

    def encode(self, feats: torch.Tensor, lengths: torch.Tensor, *, upto: int | None = None):
        """The encoder's first `upto` blocks (all by default): -> (x (B, T', d), keep (B, T'), out lengths)."""
        x = self.subsample(normalise_features(feats, lengths), lengths)
        t = x.shape[1]
        x = x + sinusoid(t, self.config.asr.d_model, x.device)
        olens = out_lengths(lengths)
        keep = (torch.arange(t, device=x.device)[None, :] < olens[:, None]).to(x.dtype)
        return self.run_blocks(x, keep, self.blocks[:upto]), keep, olens

    @staticmethod
    def run_blocks(x, keep, blocks):
        bias = ((1.0 - keep) * -1e4)[:, None, None, :]
        for block in blocks:
            x = block(x, bias, keep[:, :, None])
        return x

    def embed_encoded(self, x: torch.Tensor, keep: torch.Tensor, *, start: int | None = None) -> torch.Tensor:
        """Encoder blocks from `start` on (none by default), the head, pooling, projection -> unit (B, D)."""
        if start is not None:
            x = self.run_blocks(x, keep, self.blocks[start:])
        x = self.run_blocks(x, keep, self.head_blocks)
        return F.normalize(self.proj(self.norm(self.pool(x, keep))), dim=-1)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """feats (B, T, n_mels) log-mel, lengths (B,) frames -> (B, embed_dim) unit vectors."""
        x, keep, _ = self.encode(feats, lengths)
        return self.embed_encoded(x, keep)
