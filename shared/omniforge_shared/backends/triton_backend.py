"""Runs the decoder graph on a Triton Inference Server (gRPC); the generation loop stays here."""
from __future__ import annotations

import numpy as np

from .base import DecoderSpec


class TritonDecoder:
    name = "triton"

    def __init__(self, url: str, model_name: str, spec: DecoderSpec, *, model_version: str = "",
                 timeout_s: float = 30.0) -> None:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        self._grpc = grpcclient
        self.spec = spec
        self.model_name, self.model_version = model_name, model_version
        self.timeout_s = timeout_s
        self.client = grpcclient.InferenceServerClient(url=url)
        try:
            ready = self.client.is_model_ready(model_name, model_version)
        except InferenceServerException as e:
            raise ConnectionError(f"Triton at {url} does not answer: {e}") from e
        if not ready:
            raise ConnectionError(f"Triton at {url} has no ready model {model_name!r}"
                                  f"{f' version {model_version}' if model_version else ''}; "
                                  "write one with `omniforge export triton`")
        meta = self.client.get_model_metadata(model_name, model_version)
        self.input_names = [i.name for i in meta.inputs]
        self.output_names = [o.name for o in meta.outputs]

    def forward(self, input_ids, position_ids, attention_mask, past):
        arrays = dict(zip(["input_ids", "position_ids", "attention_mask"], [input_ids, position_ids, attention_mask]))
        arrays.update((f"past_key_values.{i // 2}.{'key' if i % 2 == 0 else 'value'}", p) for i, p in enumerate(past))
        inputs = []
        for name in self.input_names:
            value = np.ascontiguousarray(arrays[name])
            tensor = self._grpc.InferInput(name, list(value.shape), "INT64" if value.dtype == np.int64 else "FP32")
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        outputs = [self._grpc.InferRequestedOutput(n) for n in self.output_names]
        result = self.client.infer(self.model_name, inputs, model_version=self.model_version, outputs=outputs,
                                   client_timeout=self.timeout_s)
        by_name = {n: result.as_numpy(n) for n in self.output_names}
        logits = by_name["logits"]
        present = [by_name[f"present.{i}.{kv}"] for i in range(self.spec.n_layer) for kv in ("key", "value")]
        return logits, present

    def close(self) -> None:
        self.client.close()
