"""DDIM sampling in numpy (Song et al. 2020, eta = 0), step for step what diffusers'
`DDIMScheduler` does with the same config, so the serving path runs the ONNX U-Net without torch.

The config is the training scheduler's: `num_train_timesteps`, the betas' schedule (its
`alphas_cumprod` are stored with the model), `timestep_spacing`, `steps_offset`,
`clip_sample` / `clip_sample_range`, `set_alpha_to_one` and `prediction_type`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DDIMConfig:
    alphas_cumprod: np.ndarray               # (num_train_timesteps,) float64
    timestep_spacing: str = "leading"
    steps_offset: int = 0
    clip_sample: bool = True
    clip_sample_range: float = 1.0
    set_alpha_to_one: bool = True
    prediction_type: str = "epsilon"

    @property
    def num_train_timesteps(self) -> int:
        return len(self.alphas_cumprod)

    @classmethod
    def from_dict(cls, d: dict, alphas_cumprod: np.ndarray) -> "DDIMConfig":
        keys = ("timestep_spacing", "steps_offset", "clip_sample", "clip_sample_range", "set_alpha_to_one",
                "prediction_type")
        return cls(alphas_cumprod=np.asarray(alphas_cumprod, np.float64), **{k: d[k] for k in keys if k in d})


def timesteps(cfg: DDIMConfig, steps: int) -> np.ndarray:
    """The `steps` training timesteps visited, last (noisiest) first, as diffusers spaces them."""
    T = cfg.num_train_timesteps
    if not 1 <= steps <= T:
        raise ValueError(f"steps={steps} is out of range; send 1 to {T}")
    if cfg.timestep_spacing == "leading":
        ts = (np.arange(0, steps) * (T // steps)).round()[::-1].astype(np.int64) + cfg.steps_offset
    elif cfg.timestep_spacing == "trailing":
        ts = np.round(np.arange(T, 0, -T / steps)).astype(np.int64) - 1
    elif cfg.timestep_spacing == "linspace":
        ts = np.linspace(0, T - 1, steps).round()[::-1].astype(np.int64)
    else:
        raise ValueError(f"timestep_spacing {cfg.timestep_spacing!r} is not supported")
    return ts


def predicted(cfg: DDIMConfig, model_output: np.ndarray, t: int, sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The clean image and the noise that the model's output at timestep t implies (x0 unclipped)."""
    a_t = cfg.alphas_cumprod[t]
    if cfg.prediction_type == "epsilon":
        eps = model_output
        x0 = (sample - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t)
    elif cfg.prediction_type == "v_prediction":
        x0 = np.sqrt(a_t) * sample - np.sqrt(1 - a_t) * model_output
        eps = np.sqrt(a_t) * model_output + np.sqrt(1 - a_t) * sample
    else:
        raise ValueError(f"prediction_type {cfg.prediction_type!r} is not supported")
    return x0, eps


def ddim_step(cfg: DDIMConfig, model_output: np.ndarray, t: int, sample: np.ndarray, steps: int) -> np.ndarray:
    """x_t -> x_{t - T/steps} (eta = 0)."""
    a = cfg.alphas_cumprod
    prev_t = t - cfg.num_train_timesteps // steps
    a_prev = a[prev_t] if prev_t >= 0 else (1.0 if cfg.set_alpha_to_one else a[0])
    # 1. the predicted clean image and noise, from the model's output
    x0, eps = predicted(cfg, model_output, t, sample)
    if cfg.clip_sample:
        x0 = np.clip(x0, -cfg.clip_sample_range, cfg.clip_sample_range)   # eps is kept as predicted
    # 2. the direction pointing to x_t, 3. x_{t-1}
    return (np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps).astype(sample.dtype)


def guided(eps_cond: np.ndarray, eps_uncond: np.ndarray, guidance: float) -> np.ndarray:
    """Classifier-free guidance: eps_uncond + w (eps_cond - eps_uncond) (w = 1: no guidance)."""
    return eps_uncond + guidance * (eps_cond - eps_uncond)
