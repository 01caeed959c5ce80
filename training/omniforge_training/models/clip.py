"""CLIP: an image tower and a text tower projected into one shared, L2-normalised latent space.

The image tower is our ViT, trained from scratch. The text tower is the frozen, pretrained
MiniLM (LIFT-style: its features are computed once and cached, so training runs only the image
tower), whose projection head is what the text side learns; or, as the alternative, our own
small text encoder over the text path's BPE tokens, trained from scratch with the image tower
(`text_tower="own"`). Loss: symmetric InfoNCE with a
learnable temperature clamped to at most `max_logit_scale`, and multi-positive targets, since
the starter set has several images (styles) and several captions of one concept in a batch.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .text_encoder import OwnTextEncoder, TextEncoderConfig
from .vit import ViT, ViTConfig

# the shared latent space: every tower of every modality (text, image, audio) projects here
EMBED_DIM = 256


@dataclass
class CLIPConfig:
    vision: ViTConfig = field(default_factory=ViTConfig)
    text_dim: int = 384                    # MiniLM's feature width
    embed_dim: int = EMBED_DIM
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    text_tower: str = "minilm"             # "minilm" (frozen, pretrained) | "own" (ours, trained here)
    text: TextEncoderConfig | None = None  # our text encoder's shape, for text_tower="own"

    def __post_init__(self) -> None:
        if self.text_tower not in ("minilm", "own"):
            raise ValueError(f"text_tower={self.text_tower!r}; choose 'minilm' or 'own'")
        if self.text_tower == "own":
            self.text = self.text or TextEncoderConfig()
            self.text_dim = self.text.n_embd

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CLIPConfig":
        d = dict(d)
        d["vision"] = ViTConfig(**d.get("vision", {}))
        if d.get("text"):
            d["text"] = TextEncoderConfig(**d["text"])
        return cls(**d)


class CLIP(nn.Module):
    def __init__(self, cfg: CLIPConfig) -> None:
        super().__init__()
        self.config = cfg
        self.vision = ViT(cfg.vision)
        self.image_proj = nn.Linear(cfg.vision.n_embd, cfg.embed_dim, bias=False)
        self.text_proj = nn.Linear(cfg.text_dim, cfg.embed_dim, bias=False)
        self.text = OwnTextEncoder(cfg.text) if cfg.text_tower == "own" else None
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, D), unit length."""
        return F.normalize(self.image_proj(self.vision(pixel_values)), dim=-1)

    def encode_text_features(self, text_features: torch.Tensor) -> torch.Tensor:
        """(B, 384) text-tower features -> (B, D), unit length."""
        return F.normalize(self.text_proj(text_features), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Our own text tower: (B, T) BPE ids and mask -> (B, D), unit length."""
        return self.encode_text_features(self.text(input_ids, attention_mask))

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=math.log(self.config.max_logit_scale)).exp()

    def loss(self, image_emb: torch.Tensor, text_emb: torch.Tensor, concept: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Symmetric multi-positive InfoNCE over a batch; `concept` (B,) marks which pairs match."""
        logits = self.scale() * image_emb @ text_emb.t()                       # (B, B): image i vs caption j
        positive = (concept[:, None] == concept[None, :]).float()             # same concept = a match
        target = positive / positive.sum(1, keepdim=True)
        loss_i2t = torch.sum(-target * F.log_softmax(logits, dim=1), dim=1).mean()
        loss_t2i = torch.sum(-target * F.log_softmax(logits.t(), dim=1), dim=1).mean()
        with torch.no_grad():
            hit = positive.gather(1, logits.argmax(1, keepdim=True)).mean()
        return (loss_i2t + loss_t2i) / 2, {"batch_i2t_acc": hit.item(), "temperature": 1.0 / self.scale().item()}
