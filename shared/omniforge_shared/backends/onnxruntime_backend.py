from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .base import DecoderSpec, KVCache, cache_io_names


class OnnxDecoder:
    """Runs the decoder graph with the cache bound in place: each layer's past and present
    are the same buffer, so the graph's attention appends to it instead of copying it.

    Bindings are kept per (cache, rows, sequence length), the few most recently used, so a
    decode loop's step only writes its ids and lengths into the bound input buffers, and a
    Score call in between does not cost the loop its binding."""
    name = "onnxruntime"
    KEEP_BINDINGS = 4

    def __init__(self, path: Path, spec: DecoderSpec, *, threads: int = 0, spin_wait: bool = True,
                 session: ort.InferenceSession | None = None, embed_dim: int = 0) -> None:
        """`session`: one already made for `path` (other execution providers), else a CPU one.
        `embed_dim` > 0: the graph takes `inputs_embeds` (b, S, embed_dim) instead of token ids."""
        self.spec = spec
        self.embed_dim = embed_dim
        if session is None:
            opts = ort.SessionOptions()
            if threads:
                opts.intra_op_num_threads = threads
                opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if not spin_wait:
                opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.session = session
        self._cache_names = cache_io_names(spec.n_layer)
        self._lock = threading.Lock()     # the engine's steps and Score calls may come from two threads
        # key -> (io binding, ids buffer, lengths buffer, logits buffer, the cache it points into)
        self._bindings: OrderedDict[tuple, tuple] = OrderedDict()

    def _bind(self, cache: KVCache, start: int, b: int, S: int) -> tuple:
        key = (id(cache), start, b, S)
        if key in self._bindings:
            self._bindings.move_to_end(key)
            return self._bindings[key]
        io = self.session.io_binding()
        if self.embed_dim:
            ids = np.zeros((b, S, self.embed_dim), np.float32)
        else:
            ids = np.zeros((b, S), np.int64)
        lengths = np.zeros(b, np.int32)
        logits = np.empty((b, S, self.spec.vocab_size), np.float32)
        # pointers, not copies: the session reads and writes these buffers at every run
        if self.embed_dim:
            io.bind_input("inputs_embeds", "cpu", 0, np.float32, [b, S, self.embed_dim], ids.ctypes.data)
        else:
            io.bind_input("input_ids", "cpu", 0, np.int64, [b, S], ids.ctypes.data)
        io.bind_input("lengths", "cpu", 0, np.int32, [b], lengths.ctypes.data)
        for (past, present), array in zip(self._cache_names, cache.arrays):
            rows = array[start:start + b]                  # contiguous: rows are the outer axis
            io.bind_input(past, "cpu", 0, np.float32, list(rows.shape), rows.ctypes.data)
            io.bind_output(present, "cpu", 0, np.float32, list(rows.shape), rows.ctypes.data)
        io.bind_output("logits", "cpu", 0, np.float32, list(logits.shape), logits.ctypes.data)
        # the cache object is kept alive with its binding, so its buffers outlive the pointers
        self._bindings[key] = (io, ids, lengths, logits, cache)
        while len(self._bindings) > self.KEEP_BINDINGS:
            self._bindings.popitem(last=False)
        return self._bindings[key]

    def forward(self, input_ids, lengths, cache: KVCache, start: int):
        """input_ids (b, S) int64, or (b, S, embed_dim) float32 embeddings for an embeds graph."""
        b, S = input_ids.shape[:2]
        with self._lock:
            io, ids, lens, logits, _ = self._bind(cache, start, b, S)
            ids[...] = input_ids
            lens[...] = lengths
            self.session.run_with_iobinding(io)
            return logits      # valid until the next step with the same rows rewrites it

    def close(self) -> None:
        with self._lock:
            self._bindings.clear()
            self.session = None
