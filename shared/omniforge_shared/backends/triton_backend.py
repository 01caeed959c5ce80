"""Runs the decoder graph on a Triton Inference Server (gRPC); the generation loop stays here."""
from __future__ import annotations

import numpy as np

from .base import DecoderSpec, KVCache, cache_io_names


class TritonDecoder:
    """The server cannot write into this process's cache, so each step sends the rows' cached
    keys and values and writes the returned ones back (the graph's non-shared cache mode)."""
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
        self._cache_names = cache_io_names(spec.n_layer)

    def _input(self, name: str, value: np.ndarray):
        value = np.ascontiguousarray(value)
        datatype = {np.dtype(np.int64): "INT64", np.dtype(np.int32): "INT32"}.get(value.dtype, "FP32")
        tensor = self._grpc.InferInput(name, list(value.shape), datatype)
        tensor.set_data_from_numpy(value)
        return tensor

    def forward(self, input_ids, lengths, cache: KVCache, start: int):
        b, S = input_ids.shape
        total = int(np.max(lengths))
        past = total - 1 if S == 1 else 0
        rows = slice(start, start + b)
        arrays = {"input_ids": np.asarray(input_ids, np.int64),
                  "lengths": np.asarray(lengths, np.int32).reshape(b, 1)}   # config: dims [1], reshape []
        for (name, _), a in zip(self._cache_names, cache.arrays):
            arrays[name] = a[rows, :, :past]
        inputs = [self._input(name, arrays[name]) for name in self.input_names]
        outputs = [self._grpc.InferRequestedOutput(n) for n in self.output_names]
        result = self.client.infer(self.model_name, inputs, model_version=self.model_version, outputs=outputs,
                                   client_timeout=self.timeout_s)
        for (_, name), a in zip(self._cache_names, cache.arrays):
            present = result.as_numpy(name)
            a[rows, :, :present.shape[2]] = present
        return result.as_numpy("logits")

    def close(self) -> None:
        self.client.close()
