"""The captioner: image -> prefix tokens -> the text path's GPT decoder (ClipCap-style prefix).

    image (B, 3, S, S) --CLIP ViT (frozen)--> tokens (B, N, Cv), embedding (B, D)
      tokens, 2x2 average-pooled -> (B, N/4, Cv) --Linear--> (B, N/4, C)      spatial prefix
      embedding --Linear--> (B, 1, C)                                          global prefix
    [prefix | prompt tokens | caption tokens | EOS] -> GPT (rotary positions) -> next-token logits

The prefix carries the image; an optional text prompt after it ("describe the colours")
steers what the caption says. Loss only on the caption (and its EOS).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .gpt import GPT, GPTConfig
from .vit import ViTConfig


@dataclass
class CaptionerConfig:
    vision: ViTConfig = field(default_factory=ViTConfig)
    embed_dim: int = 256             # the CLIP embedding fed as the global prefix token
    decoder: GPTConfig = field(default_factory=lambda: GPTConfig(vocab_size=4096, block_size=64, n_layer=3,
                                                                 n_head=4, n_embd=256))
    pool: int = 2                    # the ViT token grid is average-pooled pool x pool

    @property
    def n_prefix(self) -> int:
        side = self.vision.image_size // self.vision.patch_size // self.pool
        return side * side + 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CaptionerConfig":
        return cls(vision=ViTConfig(**d["vision"]), embed_dim=d["embed_dim"], decoder=GPTConfig(**d["decoder"]),
                   pool=d.get("pool", 2))


class PrefixMapper(nn.Module):
    """ViT tokens (B, N, Cv) and the CLIP embedding (B, D) -> prefix embeddings (B, P, C)."""

    def __init__(self, cfg: CaptionerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.spatial = nn.Linear(cfg.vision.n_embd, cfg.decoder.n_embd)
        self.pooled = nn.Linear(cfg.embed_dim, cfg.decoder.n_embd)
        self.ln = nn.LayerNorm(cfg.decoder.n_embd)

    def pool_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        B, N, C = tokens.shape
        side = int(N ** 0.5)
        grid = tokens.transpose(1, 2).reshape(B, C, side, side)
        return F.avg_pool2d(grid, self.cfg.pool).flatten(2).transpose(1, 2)        # (B, N / pool^2, C)

    def forward(self, pooled_tokens: torch.Tensor, image_emb: torch.Tensor) -> torch.Tensor:
        prefix = torch.cat([self.pooled(image_emb)[:, None], self.spatial(pooled_tokens)], dim=1)
        return self.ln(prefix)                                                     # (B, P, C)


class Captioner(nn.Module):
    def __init__(self, cfg: CaptionerConfig) -> None:
        super().__init__()
        self.config = cfg
        self.mapper = PrefixMapper(cfg)
        self.decoder = GPT(cfg.decoder)

    def loss(self, prefix: torch.Tensor, ids: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
        """prefix (B, P, C); ids (B, T) prompt+caption+EOS, right-padded; target_mask (B, T): which
        positions are predicted (the caption and its EOS, not the prompt or padding)."""
        x = torch.cat([prefix, self.decoder.transformer.wte(ids)], dim=1)          # (B, P + T, C)
        logits, _, _ = self.decoder(inputs_embeds=x)
        P = prefix.shape[1]
        pred = logits[:, P - 1:-1]                                                 # position P-1+t predicts ids[t]
        loss = F.cross_entropy(pred.reshape(-1, pred.size(-1)), ids.reshape(-1), reduction="none")
        mask = target_mask.reshape(-1).float()
        return (loss * mask).sum() / mask.sum()
