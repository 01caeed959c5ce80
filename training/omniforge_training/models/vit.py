"""A small Vision Transformer for 32-64 px images, trained from scratch.

A plain ViT (Dosovitskiy et al. 2020) with two changes that small data sets need: a
convolutional stem instead of one big patchify convolution (Xiao et al. 2021, "Early
convolutions help transformers see better": steadier optimisation, better accuracy at small
scale), and learnable 2-D position embeddings. Output: the pooled image feature (mean over
tokens after the final norm) and, for the captioner, every token.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ViTConfig:
    image_size: int = 64
    patch_size: int = 8          # the stem downsamples by this factor: (64 / 8)^2 = 64 tokens
    n_layer: int = 6
    n_head: int = 4
    n_embd: int = 192
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    drop_path: float = 0.1       # stochastic depth, rising linearly to this over the layers

    @property
    def n_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def to_dict(self) -> dict:
        return asdict(self)


class ConvStem(nn.Module):
    """log2(patch_size) stride-2 3x3 convolutions: (B, 3, H, W) -> (B, N, C)."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        n_down = cfg.patch_size.bit_length() - 1
        if 2 ** n_down != cfg.patch_size:
            raise ValueError(f"patch_size must be a power of two, got {cfg.patch_size}")
        widths = [cfg.n_embd // 2 ** (n_down - i) for i in range(1, n_down + 1)]
        layers, c_in = [], 3
        for w in widths:
            layers += [nn.Conv2d(c_in, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.GELU()]
            c_in = w
        layers.append(nn.Conv2d(c_in, cfg.n_embd, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.net(x)                          # (B, C, H/p, W/p)
        return x.flatten(2).transpose(1, 2)      # (B, N, C)


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig, drop_path: float) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        hidden = int(cfg.n_embd * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(cfg.n_embd, hidden), nn.GELU(), nn.Linear(hidden, cfg.n_embd),
                                 nn.Dropout(cfg.dropout))
        self.drop_path = drop_path

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        # stochastic depth: drop the whole residual branch for some samples while training
        if not self.training or self.drop_path == 0.0:
            return x
        keep = torch.rand(x.shape[0], 1, 1, dtype=x.dtype, device=x.device) >= self.drop_path
        return x * keep / (1.0 - self.drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, N, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, N, hs)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C)
        x = x + self._drop(self.proj(a))
        return x + self._drop(self.mlp(self.ln_2(x)))


class ViT(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.config = cfg
        self.stem = ConvStem(cfg)
        self.pos = nn.Parameter(torch.zeros(1, cfg.n_tokens, cfg.n_embd))
        rates = [cfg.drop_path * i / max(1, cfg.n_layer - 1) for i in range(cfg.n_layer)]
        self.blocks = nn.ModuleList(Block(cfg, r) for r in rates)
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised pixels -> (B, N, C) token features."""
        x = self.stem(pixel_values) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C) pooled image feature."""
        return self.forward_tokens(pixel_values).mean(dim=1)
