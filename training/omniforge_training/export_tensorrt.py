"""TensorRT engines for the ONNX decoder graph, on GPU workers whose onnxruntime has TensorRT.

The graph's attention is onnxruntime's com.microsoft.GroupQueryAttention, which the bare
TensorRT ONNX parser does not know. So the engine is built through onnxruntime's TensorRT
execution provider: TensorRT takes every subgraph it supports, the attention runs in the CUDA
provider, and the result is saved as an "EP context" model (`model.trt.onnx`) that embeds the
serialized engines, so serving loads it without rebuilding.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from omniforge_shared.backends.base import DecoderSpec, KVCache


def tensorrt_available() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "TensorrtExecutionProvider" in ort.get_available_providers()


def _profile(spec: DecoderSpec, batch: int, sequence: int) -> str:
    shapes = [f"input_ids:{batch}x{sequence}", f"lengths:{batch}"]
    shapes += [f"past_key_values.{i}.{kv}:{batch}x{spec.n_head}x{spec.context_length}x{spec.head_size}"
               for i in range(spec.n_layer) for kv in ("key", "value")]
    return ",".join(shapes)


def build_engine(onnx_path: Path, out_path: Path, spec: DecoderSpec, *, max_batch: int = 16,
                 fp16: bool = True, log=print) -> Path:
    """Builds engines covering batch 1..max_batch, prefill and decode shapes, with the cache
    bound in place (past capacity = the context), and writes the EP context model."""
    import onnxruntime as ort

    if not tensorrt_available():
        raise RuntimeError("onnxruntime here has no TensorrtExecutionProvider: install onnxruntime-gpu with "
                           "TensorRT on a CUDA worker")
    out_path = Path(out_path)
    options = {
        "trt_fp16_enable": fp16,
        "trt_profile_min_shapes": _profile(spec, 1, 1),
        "trt_profile_opt_shapes": _profile(spec, max(1, max_batch // 2), 1),
        "trt_profile_max_shapes": _profile(spec, max_batch, spec.context_length),
        "trt_dump_ep_context_model": True,
        "trt_ep_context_file_path": str(out_path),
        "trt_ep_context_embed_mode": 1,
    }
    session = ort.InferenceSession(str(onnx_path), providers=[("TensorrtExecutionProvider", options),
                                                               "CUDAExecutionProvider"])
    # one prefill and one decode step: the engines are built, and checked to run, here
    from omniforge_shared.backends.onnxruntime_backend import OnnxDecoder

    decoder = OnnxDecoder(onnx_path, spec, session=session)
    cache = KVCache(spec, 2)
    logits = decoder.forward(np.ones((2, 4), np.int64), np.array([4, 3], np.int32), cache, 0)
    decoder.forward(logits[:, -1].argmax(-1)[:, None].astype(np.int64), np.array([5, 4], np.int32), cache, 0)
    if not out_path.exists():
        raise RuntimeError(f"onnxruntime did not write the TensorRT context model {out_path}")
    log(f"TensorRT engine written to {out_path} ({'fp16' if fp16 else 'fp32'}, batch <= {max_batch}, "
        f"sequence <= {spec.context_length})")
    return out_path
