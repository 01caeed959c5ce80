"""Inference backends behind one small interface: `DecoderBackend`.

`onnxruntime` is the default and what services run; `torch` runs the bundle's safetensors
weights for development (it imports torch, so only when asked for); `triton` sends each step
to a Triton Inference Server that serves the graph (GPU nodes).
"""
from __future__ import annotations

from omniforge_shared.bundle import Bundle

from .base import DecoderBackend, DecoderSpec

BACKENDS = ("onnxruntime", "torch", "triton")


def load_decoder(bundle: Bundle, *, backend: str = "onnxruntime", threads: int = 0,
                 int8: bool = False, triton_url: str = "127.0.0.1:8001",
                 base_bundle: Bundle | None = None) -> DecoderBackend:
    if backend == "onnxruntime":
        from .onnxruntime_backend import OnnxDecoder

        role = "model-int8" if int8 else "model"
        return OnnxDecoder(bundle.file(role), DecoderSpec.from_bundle(bundle), threads=threads)
    if backend == "torch":
        from .torch_backend import TorchDecoder

        return TorchDecoder(bundle, DecoderSpec.from_bundle(bundle), threads=threads, base_bundle=base_bundle)
    if backend == "triton":
        from .triton_backend import TritonDecoder

        # the repository written by `omniforge export triton` names the model after the bundle
        version = bundle.version if bundle.version.isdigit() else ""
        return TritonDecoder(triton_url, bundle.name, DecoderSpec.from_bundle(bundle), model_version=version)
    raise ValueError(f"backend={backend!r} is not supported; use one of {BACKENDS}")


__all__ = ["BACKENDS", "DecoderBackend", "DecoderSpec", "load_decoder"]
