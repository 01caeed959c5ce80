"""The text-to-image denoiser: a small diffusers `UNet2DConditionModel` in pixel space, conditioned
by cross-attention on the prompt's embedding in the shared latent space (the CLIP text tower's
unit vector, one context token; zeros = no condition, for classifier-free guidance).

Attention runs only at the two coarser resolutions; at 32-64 px the finest level is where the
compute goes and convolutions suffice there (the Keras DDIM / flowers recipe uses none at all).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn


@dataclass
class UNetConfig:
    image_size: int = 32
    channels: tuple[int, ...] = (32, 64, 128)
    layers_per_block: int = 1
    attention_head_dim: int = 32
    cross_attention_dim: int = 256          # the shared latent space
    norm_num_groups: int = 16
    scheduler: dict = field(default_factory=lambda: {
        "num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "epsilon",
        "clip_sample": True, "clip_sample_range": 1.0, "timestep_spacing": "leading", "steps_offset": 0,
        "set_alpha_to_one": True})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        d = dict(d)
        d["channels"] = tuple(d["channels"])
        return cls(**d)


def build_unet(cfg: UNetConfig):
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor

    n = len(cfg.channels)
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1)
    up = ("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",)
    unet = UNet2DConditionModel(sample_size=cfg.image_size, in_channels=3, out_channels=3,
                                layers_per_block=cfg.layers_per_block, block_out_channels=cfg.channels,
                                down_block_types=down, up_block_types=up, cross_attention_dim=cfg.cross_attention_dim,
                                attention_head_dim=cfg.attention_head_dim, norm_num_groups=cfg.norm_num_groups)
    # plain attention: the same maths as SDPA, and an ONNX export that needs no recent opset
    unet.set_attn_processor(AttnProcessor())
    return unet


def make_scheduler(cfg: UNetConfig, kind: str = "ddpm"):
    from diffusers import DDIMScheduler, DDPMScheduler

    s = cfg.scheduler
    common = dict(num_train_timesteps=s["num_train_timesteps"], beta_schedule=s["beta_schedule"],
                  prediction_type=s["prediction_type"], clip_sample=s["clip_sample"],
                  clip_sample_range=s["clip_sample_range"], timestep_spacing=s["timestep_spacing"],
                  steps_offset=s["steps_offset"])
    if kind == "ddpm":
        return DDPMScheduler(**common)
    return DDIMScheduler(**common, set_alpha_to_one=s["set_alpha_to_one"])


class EMA:
    """Exponential moving average of a model's weights (decay 0.999 suits short runs)."""

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))          # warm up: early weights are noise
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(d).add_(v.detach().float(), alpha=1 - d)
            else:
                self.shadow[k].copy_(v)

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in self.shadow.items()})
