from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from .base import DecoderSpec


class OnnxDecoder:
    name = "onnxruntime"

    def __init__(self, path: Path, spec: DecoderSpec, *, threads: int = 0) -> None:
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.spec = spec
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def forward(self, input_ids, position_ids, attention_mask, past):
        feed = dict(zip(self.input_names, [input_ids, position_ids, attention_mask, *past]))
        out = self.session.run(None, feed)
        return out[0], out[1:]

    def close(self) -> None:
        self.session = None
