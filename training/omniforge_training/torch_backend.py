"""Development backend: runs the bundle's safetensors weights in eager torch.

It needs the training code's model and LoRA loader, so it lives here and the shared floor
finds it by name: the `omniforge.decoder_backends` entry point `torch` (pyproject.toml).
"""
from __future__ import annotations

import numpy as np

from omniforge_shared.backends.base import DecoderSpec, KVCache
from omniforge_shared.bundle import Bundle


def load(bundle: Bundle, spec: DecoderSpec, *, threads: int = 0, base_bundle: Bundle | None = None,
         **_) -> "TorchDecoder":
    """The entry point's factory: `load_decoder(bundle, backend="torch", ...)` calls it."""
    return TorchDecoder(bundle, spec, threads=threads, base_bundle=base_bundle)


class TorchDecoder:
    name = "torch"

    def __init__(self, bundle: Bundle, spec: DecoderSpec, *, threads: int = 0,
                 base_bundle: Bundle | None = None) -> None:
        """With `base_bundle`, an adapter bundle is served unmerged: base weights + LoRA adapter."""
        import torch

        from .export_onnx import load_trained

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.spec = spec
        if base_bundle is not None and bundle.has("adapter"):
            from .finetune_lora import load_with_adapter

            self.model = load_with_adapter(bundle, base_bundle)
            return
        if not bundle.has("weights"):
            raise ValueError(f"bundle {bundle.name}:{bundle.version} has no safetensors weights for the torch backend")
        self.model, _ = load_trained(bundle.path)

    def forward(self, input_ids, lengths, cache: KVCache, start: int):
        """Row by row, each with exactly its own tokens (no padding): clear rather than fast."""
        torch = self._torch
        b, S = input_ids.shape
        out = np.zeros((b, S, self.spec.vocab_size), np.float32)
        with torch.inference_mode():
            for i in range(b):
                row, total = start + i, int(lengths[i])
                new = total if S > 1 else 1
                past = total - new
                pairs = [(torch.from_numpy(cache.arrays[2 * j][row:row + 1, :, :past]),
                          torch.from_numpy(cache.arrays[2 * j + 1][row:row + 1, :, :past]))
                         for j in range(self.spec.n_layer)]
                logits, _, presents = self.model(torch.from_numpy(input_ids[i:i + 1, :new]),
                                                 position_ids=torch.arange(past, total)[None],
                                                 past_key_values=pairs,
                                                 attention_mask=torch.ones(1, total, dtype=torch.long))
                out[i, :new] = logits[0].numpy()
                for j, (k, v) in enumerate(presents):
                    cache.arrays[2 * j][row, :, past:total] = k[0, :, past:].numpy()
                    cache.arrays[2 * j + 1][row, :, past:total] = v[0, :, past:].numpy()
        return out

    def close(self) -> None:
        self.model = None
