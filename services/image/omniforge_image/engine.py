"""The text-to-image engine: numpy DDIM around the ONNX U-Net (no torch on the serving path).

    1. the prompt -> its condition in the shared space (the bundle's text tower)
    2. seeded Gaussian noise (B, 3, S, S)
    3. per DDIM step: the U-Net on [x; x] with [condition; zeros] (batch 2B), its guided output
       (v or the noise), one DDIM update; every `preview_every` steps the current clean-image estimate is
       reported as PNGs
    4. the result mapped to uint8 PNGs, upscaled to the requested size if larger than the model's

One generation runs at a time (the U-Net already takes both cores); calls queue on a lock.
"""
from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from omniforge_shared.bundle import Bundle
from omniforge_shared.encoders import TextEmbedder, cpu_session
from omniforge_shared.scheduling_ddim import DDIMConfig, ddim_step, guided, predicted, timesteps

MAX_PROMPT_CHARS = 1000


class InvalidRequest(ValueError):
    """A request the engine cannot run; the message says what to send instead."""


@dataclass(frozen=True)
class GenerateParams:
    prompt: str
    n: int = 1
    steps: int = 25
    guidance: float = 3.0
    seed: int | None = None
    preview_every: int = 0
    size: int = 0                   # 0 = the model's own


@dataclass
class Progress:
    step: int
    steps: int
    previews: list[bytes]


@dataclass
class Image:
    index: int
    png: bytes
    seed: int


def to_png(pixels: np.ndarray, size: int) -> bytes:
    """(3, S, S) in [-1, 1] -> PNG bytes, upscaled (bicubic) to size x size when larger."""
    from PIL import Image as PILImage

    arr = ((np.clip(pixels, -1, 1) + 1) * 127.5).round().astype(np.uint8).transpose(1, 2, 0)
    img = PILImage.fromarray(arr)
    if size and size != img.width:
        img = img.resize((size, size), PILImage.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


class DiffusionEngine:
    backend_name = "onnxruntime"

    def __init__(self, bundle: Bundle, *, threads: int = 0, max_images: int = 8, max_steps: int = 200,
                 max_size: int = 512) -> None:

        self.bundle = bundle
        self.image_size = int(bundle.manifest["image_size"])
        self.max_images, self.max_steps, self.max_size = max_images, max_steps, max_size
        self.ddim = DDIMConfig.from_dict(bundle.manifest["scheduler"], np.load(bundle.file("alphas-cumprod")))
        self.unet = cpu_session(bundle.file("unet"), threads)
        self.text_tower = TextEmbedder(bundle, threads=threads)
        self._lock = threading.Lock()
        self.busy = 0

    def sizes(self) -> list[int]:
        return [self.image_size * k for k in range(1, self.max_size // self.image_size + 1)]

    def check(self, p: GenerateParams) -> None:
        if not p.prompt.strip():
            raise InvalidRequest("prompt is empty; describe the image to generate")
        if len(p.prompt) > MAX_PROMPT_CHARS:
            raise InvalidRequest(f"prompt is {len(p.prompt)} characters; send at most {MAX_PROMPT_CHARS}")
        if not 1 <= p.n <= self.max_images:
            raise InvalidRequest(f"n={p.n} is out of range; send 1 to {self.max_images}")
        if not 1 <= p.steps <= min(self.max_steps, self.ddim.num_train_timesteps):
            raise InvalidRequest(f"steps={p.steps} is out of range; send 1 to {self.max_steps}")
        if not 0.0 <= p.guidance <= 30.0:
            raise InvalidRequest(f"guidance={p.guidance} is out of range; send 0 to 30 (1 = no guidance)")
        if p.size and p.size not in self.sizes():
            raise InvalidRequest(f"size={p.size} is not available; this model draws {self.image_size} px images, "
                                 f"served at {', '.join(map(str, self.sizes()))} px")
        if p.preview_every < 0:
            raise InvalidRequest("preview_every must be >= 0 (0 = no previews)")

    def generate(self, p: GenerateParams, *, cancelled: Callable[[], bool] = lambda: False) -> Iterator[Progress | Image]:
        """Yields Progress events, then one Image per requested image. Stops early when `cancelled()`."""
        self.check(p)
        seed = p.seed if p.seed is not None else int(time.time_ns() % 2**31)
        with self._lock:
            self.busy = 1
            try:
                yield from self._generate(p, seed, cancelled)
            finally:
                self.busy = 0

    def _generate(self, p: GenerateParams, seed: int, cancelled) -> Iterator[Progress | Image]:
        S = self.image_size
        # 1. the condition, 2. the noise (one generator per image: image i is the same alone or in a batch)
        cond = self.text_tower([p.prompt])[0]
        context = np.stack([cond] * p.n + [np.zeros_like(cond)] * p.n)[:, None].astype(np.float32)   # (2n, 1, D)
        x = np.stack([np.random.default_rng(seed + i).standard_normal((3, S, S)) for i in range(p.n)]).astype(np.float32)
        ts = timesteps(self.ddim, p.steps)
        for k, t in enumerate(ts):
            if cancelled():
                return
            # 3. guided noise from one U-Net batch, one DDIM step
            eps = self.unet.run(["model_output"], {"sample": np.concatenate([x, x]),
                                                 "timestep": np.full(2 * p.n, t, np.int64),
                                                 "encoder_hidden_states": context})[0]
            eps_c, eps_u = np.split(eps, 2)
            e = guided(eps_c, eps_u, p.guidance)
            previews = []
            if p.preview_every and (k + 1) % p.preview_every == 0 and k + 1 < len(ts):
                x0, _ = predicted(self.ddim, e, int(t), x)
                previews = [to_png(img, 0) for img in x0]
            x = ddim_step(self.ddim, e, int(t), x, p.steps)
            yield Progress(step=k + 1, steps=len(ts), previews=previews)
        # 4. the images
        for i, img in enumerate(x):
            yield Image(index=i, png=to_png(img, p.size or S), seed=seed + i)

    # ---- the pool's Engine protocol ---------------------------------------------------------------

    def gauges(self) -> dict[str, float]:
        return {"generation_running": float(self.busy)}

    def retire(self) -> None:
        pass

    def stop(self) -> None:
        pass
