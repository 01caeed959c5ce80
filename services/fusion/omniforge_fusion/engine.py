"""The embedding engine: a CLIP bundle's two ONNX graphs behind `embed_texts` / `embed_pixels`.

Texts are tokenised with the bundle's tokenizer and padded per batch; images are decoded by
`omniforge_shared.images` (the only decoder untrusted bytes ever reach) and preprocessed
exactly as in training. Output rows are unit length, so a dot product is a cosine.
"""
from __future__ import annotations

import numpy as np

from omniforge_shared.bundle import Bundle
from omniforge_shared.encoders import ImageEmbedder, TextEmbedder
from omniforge_shared.images import ImageError, ImageLimits, decode_image

MAX_TEXT_CHARS = 2000


class InvalidInput(ValueError):
    """An input the engine cannot embed; the message says what to send instead."""


class AudioUnavailable(LookupError):
    """Audio was sent to a model that has no audio tower aligned to it."""


class EmbeddingEngine:
    backend_name = "onnxruntime"

    def __init__(self, bundle: Bundle, *, threads: int = 0, limits: ImageLimits = ImageLimits()) -> None:
        self.bundle = bundle
        self.limits = limits
        self.dimensions = int(bundle.manifest["embedding"]["dimensions"])
        self.image_tower = ImageEmbedder(bundle, threads=threads)
        self.text_tower = TextEmbedder(bundle, threads=threads)

    # ---- inputs ------------------------------------------------------------------------------

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """(N,) texts -> (N, D) float32 unit vectors."""
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise InvalidInput(f"input {i} is an empty text; send non-empty text")
            if len(t) > MAX_TEXT_CHARS:
                raise InvalidInput(f"input {i} is {len(t)} characters; the limit is {MAX_TEXT_CHARS}")
        return self.text_tower(texts) if texts else np.zeros((0, self.dimensions), np.float32)

    def decode(self, data: bytes, index: int = 0):
        try:
            return decode_image(data, limits=self.limits)
        except ImageError as e:
            raise InvalidInput(f"image {index}: {e}") from None

    def embed_pixels(self, images: list) -> np.ndarray:
        """RGB PIL images or uint8 (H, W, 3) arrays -> (N, D)."""
        return self.image_tower(images) if images else np.zeros((0, self.dimensions), np.float32)

    def embed(self, inputs: list[tuple[str, object]], audio=None) -> np.ndarray:
        """[("text", str) | ("image", bytes) | ("audio", bytes)] -> (N, D) in the same order.

        `audio`: the audio tower aligned to this model (bytes list -> vectors); without one, audio
        inputs are refused with `AudioUnavailable`."""
        out = np.zeros((len(inputs), self.dimensions), np.float32)
        texts = [(i, v) for i, (k, v) in enumerate(inputs) if k == "text"]
        images = [(i, v) for i, (k, v) in enumerate(inputs) if k == "image"]
        clips = [(i, v) for i, (k, v) in enumerate(inputs) if k == "audio"]
        if len(texts) + len(images) + len(clips) != len(inputs):
            raise InvalidInput("every input must be a text, an image or an audio clip")
        if clips:
            if audio is None:
                raise AudioUnavailable(f"no audio tower is served for {self.bundle.name}:{self.bundle.version}; "
                                       "train one with `omniforge train audio-align` (or run `omniforge bootstrap` "
                                       "for the starter's), or send text or an image")
            out[[i for i, _ in clips]] = audio([v for _, v in clips])
        if texts:
            out[[i for i, _ in texts]] = self.embed_texts([v for _, v in texts])
        if images:
            decoded = [self.decode(v, i) for i, v in images]
            out[[i for i, _ in images]] = self.embed_pixels(decoded)
        return out

    # ---- the pool's Engine protocol ----------------------------------------------------------

    def gauges(self) -> dict[str, float]:
        return {"embedding_dimensions": float(self.dimensions)}

    def retire(self) -> None:
        pass          # no state between calls: in-flight calls finish on their own

    def stop(self) -> None:
        pass
