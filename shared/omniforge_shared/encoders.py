"""The shared latent space's two ONNX towers, for any service that needs them: images (the
image-encoder graph and the training-time preprocessing) and texts (the tokenizer and the
text-encoder graph). Both return unit-length float32 rows."""
from __future__ import annotations

import numpy as np

from omniforge_shared.bundle import Bundle
from omniforge_shared.images import MEAN, STD, to_model_input

MAX_BATCH = 64


def cpu_session(path, threads: int = 0):
    """A CPU onnxruntime session: `threads` intra-op threads (0 = the runtime's default), one
    inter-op thread, and threads that sleep between runs instead of spinning (a service shares
    its cores with its gRPC work)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class ImageEmbedder:
    def __init__(self, bundle: Bundle, *, threads: int = 0) -> None:
        pre = bundle.manifest["preprocess"]
        self.image_size = int(pre["image_size"])
        self.mean, self.std = tuple(pre.get("mean", MEAN)), tuple(pre.get("std", STD))
        self.session = cpu_session(bundle.file("image-encoder"), threads)

    def __call__(self, images: list) -> np.ndarray:
        """RGB PIL images or uint8 (H, W, 3) arrays -> (N, D)."""
        out = []
        for start in range(0, len(images), MAX_BATCH):
            pixels = to_model_input(images[start:start + MAX_BATCH], self.image_size, self.mean, self.std)
            out.append(self.session.run(["image_embeds"], {"pixel_values": pixels})[0])
        return np.concatenate(out)


class TextEmbedder:
    def __init__(self, bundle: Bundle, *, threads: int = 0, max_tokens: int | None = None) -> None:
        from tokenizers import Tokenizer

        self.session = cpu_session(bundle.file("text-encoder"), threads)
        self.tokenizer = Tokenizer.from_file(str(bundle.file("tokenizer")))
        self.tokenizer.enable_truncation(max_tokens or int(bundle.manifest.get("preprocess", {}).get("max_tokens", 64)))
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

    def __call__(self, texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), MAX_BATCH):
            enc = self.tokenizer.encode_batch(texts[start:start + MAX_BATCH])
            ids = np.asarray([e.ids for e in enc], dtype=np.int64)
            mask = np.asarray([e.attention_mask for e in enc], dtype=np.int64)
            out.append(self.session.run(["text_embeds"], {"input_ids": ids, "attention_mask": mask})[0])
        return np.concatenate(out)
