"""Inference backends behind one small interface: `DecoderBackend`.

`onnxruntime` is the default and what services run; `triton` sends each step to a Triton
Inference Server that serves the graph (GPU nodes). Other backends are found by name among
the `omniforge.decoder_backends` entry points: the training package adds `torch`, which runs
a bundle's safetensors weights for development (so the serving path never imports torch).
"""
from __future__ import annotations

from importlib.metadata import entry_points

from omniforge_shared.bundle import Bundle

from .base import DecoderBackend, DecoderSpec

BUILT_IN = ("onnxruntime", "triton")
ENTRY_POINT_GROUP = "omniforge.decoder_backends"


def available_backends() -> list[str]:
    return [*BUILT_IN, *sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))]


def load_decoder(bundle: Bundle, *, backend: str = "onnxruntime", threads: int = 0,
                 int8: bool = False, triton_url: str = "127.0.0.1:8001",
                 base_bundle: Bundle | None = None, spin_wait: bool = True) -> DecoderBackend:
    """`spin_wait` (onnxruntime): worker threads spin between ops instead of sleeping."""
    spec = DecoderSpec.from_bundle(bundle)
    if backend == "onnxruntime":
        from .onnxruntime_backend import OnnxDecoder

        return OnnxDecoder(bundle.file("model-int8" if int8 else "model"), spec, threads=threads,
                           spin_wait=spin_wait)
    if backend == "triton":
        from .triton_backend import TritonDecoder

        # the repository written by `omniforge export triton` names the model after the bundle
        version = bundle.version if bundle.version.isdigit() else ""
        return TritonDecoder(triton_url, bundle.name, spec, model_version=version)
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == backend]
    if not found:
        hint = " (install omniforge-training for `torch`)" if backend == "torch" else ""
        raise ValueError(f"backend={backend!r} is not available{hint}; use one of {available_backends()}")
    return found[0].load()(bundle, spec, threads=threads, int8=int8, triton_url=triton_url,
                           base_bundle=base_bundle)


__all__ = ["DecoderBackend", "DecoderSpec", "available_backends", "load_decoder"]
