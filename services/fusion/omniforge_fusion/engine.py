"""The embedding engine: a CLIP bundle's two ONNX graphs behind `embed_texts` / `embed_images`.

Texts are tokenised with the bundle's tokenizer and padded per batch; images are decoded by
`omniforge_shared.images` (the only decoder untrusted bytes ever reach) and preprocessed
exactly as in training. Output rows are unit length, so a dot product is a cosine.
"""
from __future__ import annotations


import numpy as np

from omniforge_shared.bundle import Bundle
from omniforge_shared.images import ImageError, ImageLimits, decode_image, to_model_input

MAX_TEXT_CHARS = 2000
MAX_BATCH = 64


class InvalidInput(ValueError):
    """An input the engine cannot embed; the message says what to send instead."""


class EmbeddingEngine:
    backend_name = "onnxruntime"

    def __init__(self, bundle: Bundle, *, threads: int = 0, limits: ImageLimits = ImageLimits()) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.bundle = bundle
        self.limits = limits
        pre = bundle.manifest["preprocess"]
        self.image_size = int(pre["image_size"])
        self.mean, self.std = tuple(pre["mean"]), tuple(pre["std"])
        self.dimensions = int(bundle.manifest["embedding"]["dimensions"])
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        self.image_session = ort.InferenceSession(str(bundle.file("image-encoder")), opts, providers=providers)
        self.text_session = ort.InferenceSession(str(bundle.file("text-encoder")), opts, providers=providers)
        self.tokenizer = Tokenizer.from_file(str(bundle.file("tokenizer")))
        self.tokenizer.enable_truncation(int(pre.get("max_tokens", 64)))
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self.requests = 0

    # ---- inputs ------------------------------------------------------------------------------

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """(N,) texts -> (N, D) float32 unit vectors."""
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise InvalidInput(f"input {i} is an empty text; send non-empty text")
            if len(t) > MAX_TEXT_CHARS:
                raise InvalidInput(f"input {i} is {len(t)} characters; the limit is {MAX_TEXT_CHARS}")
        out = []
        for start in range(0, len(texts), MAX_BATCH):
            enc = self.tokenizer.encode_batch(texts[start:start + MAX_BATCH])
            ids = np.asarray([e.ids for e in enc], dtype=np.int64)
            mask = np.asarray([e.attention_mask for e in enc], dtype=np.int64)
            out.append(self.text_session.run(["text_embeds"], {"input_ids": ids, "attention_mask": mask})[0])
        self.requests += 1
        return np.concatenate(out) if out else np.zeros((0, self.dimensions), np.float32)

    def decode(self, data: bytes, index: int = 0):
        try:
            return decode_image(data, limits=self.limits)
        except ImageError as e:
            raise InvalidInput(f"image {index}: {e}") from None

    def embed_images(self, images: list) -> np.ndarray:
        """Encoded image bytes (or decoded RGB images) -> (N, D) float32 unit vectors."""
        decoded = [self.decode(im, i) if isinstance(im, (bytes, bytearray)) else im for i, im in enumerate(images)]
        return self.embed_pixels(decoded)

    def embed_pixels(self, images: list) -> np.ndarray:
        """RGB PIL images or uint8 (H, W, 3) arrays -> (N, D)."""
        out = []
        for start in range(0, len(images), MAX_BATCH):
            pixels = to_model_input(images[start:start + MAX_BATCH], self.image_size, self.mean, self.std)
            out.append(self.image_session.run(["image_embeds"], {"pixel_values": pixels})[0])
        self.requests += 1
        return np.concatenate(out) if out else np.zeros((0, self.dimensions), np.float32)

    def embed(self, inputs: list[tuple[str, object]]) -> np.ndarray:
        """[("text", str) | ("image", bytes)] -> (N, D) in the same order."""
        out = np.zeros((len(inputs), self.dimensions), np.float32)
        texts = [(i, v) for i, (k, v) in enumerate(inputs) if k == "text"]
        images = [(i, v) for i, (k, v) in enumerate(inputs) if k == "image"]
        if len(texts) + len(images) != len(inputs):
            raise InvalidInput("every input must be a text or an image")
        if texts:
            out[[i for i, _ in texts]] = self.embed_texts([v for _, v in texts])
        if images:
            decoded = [self.decode(v, i) for i, v in images]
            out[[i for i, _ in images]] = self.embed_pixels(decoded)
        return out

    # ---- the pool's Engine protocol ----------------------------------------------------------

    def gauges(self) -> dict[str, float]:
        return {"embedding_dimensions": float(self.dimensions)}

    def retire(self) -> None:
        pass          # no state between calls: in-flight calls finish on their own

    def stop(self) -> None:
        pass
