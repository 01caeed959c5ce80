"""TensorRT engines for the ONNX decoder graph, on GPU workers whose onnxruntime has TensorRT.

The graph's attention is onnxruntime's com.microsoft.GroupQueryAttention, which the bare
TensorRT ONNX parser does not know. So the engines are built through onnxruntime's TensorRT
execution provider: TensorRT takes the subgraphs it supports (the GEMMs, norms and
activations between attention ops), the attention stays with onnxruntime, and the result is
saved as an "EP context" model (`model.trt.onnx`) that embeds the serialized engines.
The subgraphs' shape ranges come from warm-up runs at the smallest and largest shapes served.
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


def build_engine(onnx_path: Path, out_path: Path, spec: DecoderSpec, *, max_batch: int = 16,
                 fp16: bool = True, log=print) -> Path:
    """Builds engines covering batch 1..max_batch, prefill and decode, with the cache bound in
    place (past capacity = the context), checks they run, and writes the EP context model."""
    import onnxruntime as ort

    from omniforge_shared.backends.onnxruntime_backend import OnnxDecoder

    if not tensorrt_available():
        raise RuntimeError("onnxruntime here has no TensorrtExecutionProvider: install onnxruntime-gpu with "
                           "TensorRT on a CUDA worker")
    out_path = Path(out_path)
    options = {"trt_fp16_enable": fp16, "trt_dump_ep_context_model": True,
               "trt_ep_context_file_path": str(out_path), "trt_ep_context_embed_mode": 1}
    session = ort.InferenceSession(str(onnx_path), providers=[("TensorrtExecutionProvider", options),
                                                               "CUDAExecutionProvider"])
    decoder = OnnxDecoder(onnx_path, spec, session=session)
    cache = KVCache(spec, max_batch)
    for batch, prompt in ((1, 1), (max_batch, spec.context_length - 1)):
        lengths = np.full(batch, prompt, np.int32)
        logits = decoder.forward(np.ones((batch, prompt), np.int64), lengths, cache, 0)
        step = logits[:, -1].argmax(-1)[:, None].astype(np.int64)
        decoder.forward(step, lengths + 1, cache, 0)
    if not out_path.exists():
        raise RuntimeError(f"onnxruntime did not write the TensorRT context model {out_path}")
    log(f"TensorRT engine written to {out_path} ({'fp16' if fp16 else 'fp32'}, batch <= {max_batch}, "
        f"sequence <= {spec.context_length})")
    return out_path
