"""Inference backends behind one small interface: `DecoderBackend`.

`onnxruntime` is the default and what services run; `torch` runs the bundle's safetensors
weights for development (it imports torch, so only when asked for).
"""
from __future__ import annotations

from omniforge_shared.bundle import Bundle

from .base import DecoderBackend, DecoderSpec

BACKENDS = ("onnxruntime", "torch")


def load_decoder(bundle: Bundle, *, backend: str = "onnxruntime", threads: int = 0,
                 int8: bool = False) -> DecoderBackend:
    if backend == "onnxruntime":
        from .onnxruntime_backend import OnnxDecoder

        role = "model-int8" if int8 else "model"
        return OnnxDecoder(bundle.file(role), DecoderSpec.from_bundle(bundle), threads=threads)
    if backend == "torch":
        from .torch_backend import TorchDecoder

        return TorchDecoder(bundle, DecoderSpec.from_bundle(bundle), threads=threads)
    raise ValueError(f"backend={backend!r} is not supported; use one of {BACKENDS}")


__all__ = ["BACKENDS", "DecoderBackend", "DecoderSpec", "load_decoder"]
