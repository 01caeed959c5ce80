from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from omniforge_shared.bundle import Bundle


@dataclass(frozen=True)
class DecoderSpec:
    """The shape facts a generation loop needs about a decoder graph."""
    n_layer: int
    n_head: int
    head_size: int
    vocab_size: int
    context_length: int

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> "DecoderSpec":
        g = bundle.manifest["graph"]
        return cls(n_layer=g["n_layer"], n_head=g["n_head"], head_size=g["head_size"],
                   vocab_size=bundle.manifest["tokenizer"]["vocab_size"],
                   context_length=g["context_length"])

    def empty_cache(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, self.n_head, 0, self.head_size), np.float32)
                for _ in range(2 * self.n_layer)]


class DecoderBackend(Protocol):
    """One forward step of a decoder with a KV cache.

    input_ids, position_ids: (B, T) int64; attention_mask: (B, P + T) int64 (1 = real token);
    past: 2 * n_layer arrays (B, nh, P, hs), key then value per layer.
    Returns logits (B, T, V) float32 and the new cache (B, nh, P + T, hs).
    """
    name: str
    spec: DecoderSpec

    def forward(self, input_ids: np.ndarray, position_ids: np.ndarray, attention_mask: np.ndarray,
                past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]: ...

    def close(self) -> None: ...
