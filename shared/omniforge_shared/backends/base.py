from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from omniforge_shared.bundle import Bundle

# the decoder graph's interface; bundles exported before it used another one
GRAPH_FORMAT = "gqa-kv-1"


class IncompatibleBundle(ValueError):
    pass


def cache_io_names(n_layer: int) -> list[tuple[str, str]]:
    """The graph's (input, output) names of each cache array, in KVCache.arrays order."""
    return [(f"past_key_values.{i}.{kv}", f"present.{i}.{kv}") for i in range(n_layer) for kv in ("key", "value")]


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
        if g.get("format") != GRAPH_FORMAT:
            raise IncompatibleBundle(
                f"bundle {bundle.name}:{bundle.version} holds a decoder graph of format {g.get('format', 'unversioned')!r};"
                f" this version serves {GRAPH_FORMAT!r}: export it again with `omniforge export onnx`")
        return cls(n_layer=g["n_layer"], n_head=g["n_head"], head_size=g["head_size"],
                   vocab_size=bundle.manifest["tokenizer"]["vocab_size"],
                   context_length=g["context_length"])


class KVCache:
    """Keys and values of up to `rows` sequences, one row each, every row starting at position 0.

    `arrays` holds 2 * n_layer arrays (rows, n_head, context, head_size), key then value per
    layer. The decoder writes each step's keys and values in place, so a step copies nothing
    it has already cached; rows [0, b) are the batch of b running sequences.
    """

    def __init__(self, spec: DecoderSpec, rows: int) -> None:
        self.arrays = [np.zeros((rows, spec.n_head, spec.context_length, spec.head_size), np.float32)
                       for _ in range(2 * spec.n_layer)]

    def move(self, src: int, dst: int, length: int) -> None:
        """Copies the first `length` positions of row `src` into row `dst`."""
        for a in self.arrays:
            a[dst, :, :length] = a[src, :, :length]


class DecoderBackend(Protocol):
    """One forward step of a decoder over a KVCache.

    input_ids (b, S) int64 runs in cache rows [start, start + b); lengths (b,) int32 is each
    row's length once the step is done. S > 1 is a prefill: the rows are empty, row i's
    prompt is its first lengths[i] ids (right-padded) and max(lengths) == S. S == 1 is a
    decode step: row i holds lengths[i] - 1 tokens (0 for a one-token prompt). The new keys
    and values land in the cache; returns logits (b, S, V) float32 (padding rows undefined),
    which the backend may reuse for its next step: read them before calling again.
    """
    name: str
    spec: DecoderSpec

    def forward(self, input_ids: np.ndarray, lengths: np.ndarray, cache: KVCache, start: int) -> np.ndarray: ...

    def close(self) -> None: ...
