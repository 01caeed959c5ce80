"""The text-to-image denoiser: a small diffusers `UNet2DConditionModel` in pixel space, conditioned
on the prompt's embedding in the shared latent space (the CLIP text tower's unit vector; zeros = no
condition, for classifier-free guidance) twice over:

  - cross-attention on it as one context token, at the levels named in `attention`;
  - added to the timestep embedding (`class_embed_type="projection"`), which every ResNet block
    applies as a scale and shift of its features: a global condition reaches every resolution.

Patching (Hoogeboom et al. 2023, "simple diffusion"): the image is folded into `patch` x `patch`
pixel blocks (pixel_unshuffle) before the U-Net and unfolded after it, so a 64 px image costs what a
32 px one would. Self-attention at 16 x 16 tokens costs more than all the convolutions here on a
CPU (measured), so attention runs only at the coarsest level by default.

The model predicts v (Salimans & Ho 2022), not the noise: with the cosine schedule an
epsilon-predictor's clean-image estimate at high noise is its error magnified ~25x, so the first
DDIM steps commit to noise-shaped texture and the prompt, decided there, hardly trains
(measured: conditional and unconditional loss equal after 1,300 steps). Sampling starts at the
last training timestep ("trailing" spacing, Lin et al. 2023).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class UNetConfig:
    image_size: int = 64
    patch: int = 2
    channels: tuple[int, ...] = (32, 64, 128, 128)
    attention: tuple[bool, ...] = ()        # per level; () = the coarsest level only
    layers_per_block: int = 1
    attention_head_dim: int = 32
    cross_attention_dim: int = 256          # the shared latent space
    norm_num_groups: int = 16
    scheduler: dict = field(default_factory=lambda: {
        "num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction",
        "clip_sample": True, "clip_sample_range": 1.0, "timestep_spacing": "trailing", "steps_offset": 0,
        "set_alpha_to_one": True})

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        self.attention = tuple(bool(a) for a in self.attention) or (False,) * (len(self.channels) - 1) + (True,)
        if len(self.attention) != len(self.channels):
            raise ValueError(f"attention {self.attention} needs one flag per level of channels {self.channels}")
        if self.image_size % (self.patch * 2 ** (len(self.channels) - 1)):
            raise ValueError(f"image_size {self.image_size} must divide by patch x 2^(levels-1) = "
                             f"{self.patch * 2 ** (len(self.channels) - 1)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        return cls(**d)


class Denoiser(nn.Module):
    """(noisy image (B, 3, S, S), timestep (B,), condition (B, 1, D)) -> predicted noise (B, 3, S, S)."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        from diffusers import UNet2DConditionModel
        from diffusers.models.attention_processor import AttnProcessor

        self.patch = cfg.patch
        down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention)
        up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention))
        ch = 3 * cfg.patch ** 2
        self.unet = UNet2DConditionModel(
            sample_size=cfg.image_size // cfg.patch, in_channels=ch, out_channels=ch,
            layers_per_block=cfg.layers_per_block, block_out_channels=cfg.channels, down_block_types=down,
            up_block_types=up, cross_attention_dim=cfg.cross_attention_dim, attention_head_dim=cfg.attention_head_dim,
            norm_num_groups=cfg.norm_num_groups, class_embed_type="projection",
            projection_class_embeddings_input_dim=cfg.cross_attention_dim, resnet_time_scale_shift="scale_shift")
        # plain attention: the same maths as SDPA, and an ONNX export that needs no recent opset
        self.unet.set_attn_processor(AttnProcessor())

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = F.pixel_unshuffle(sample, self.patch) if self.patch > 1 else sample
        out = self.unet(x, timestep, cond, class_labels=cond[:, 0]).sample
        return F.pixel_shuffle(out, self.patch) if self.patch > 1 else out


def build_unet(cfg: UNetConfig) -> Denoiser:
    return Denoiser(cfg)


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
