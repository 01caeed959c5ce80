"""The caption engine: a captioner bundle's prefix encoder and KV-cache decoder, behind one
batching thread.

Requests wait in a queue; the engine thread takes every waiting greedy or sampling request with
the same prompt (up to `max_batch`) and decodes them as one batch: one prefix-encoder run, one
prefill of [image prefix | prompt], then one decoder step per token for all rows, each row
sampled with its own settings and seed. Beam search decodes one request at a time, its beams
being the batch rows (their cache rows reordered in place after each step).
"""
from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from omniforge_shared.backends.base import DecoderSpec, KVCache
from omniforge_shared.bundle import Bundle
from omniforge_shared.encoders import cpu_session
from omniforge_shared.images import ImageError, ImageLimits, decode_image, to_model_input

from .engine import InvalidInput

logger = logging.getLogger(__name__)
MAX_PROMPT_CHARS = 200


@dataclass(frozen=True)
class CaptionParams:
    max_tokens: int = 24
    temperature: float = 0.0           # 0 = greedy
    top_k: int = 0
    top_p: float = 1.0
    num_beams: int = 1
    seed: int | None = None
    prompt: str = ""

    def check(self, limit: int) -> None:
        if not 1 <= self.max_tokens <= limit:
            raise InvalidInput(f"max_tokens={self.max_tokens} is out of range; send 1 to {limit}")
        if not 0.0 <= self.temperature <= 5.0:
            raise InvalidInput(f"temperature={self.temperature} is out of range; send 0 (greedy) to 5")
        if not 0.0 < self.top_p <= 1.0 or self.top_k < 0:
            raise InvalidInput("top_p must be in (0, 1] and top_k >= 0 (0 = off)")
        if not 1 <= self.num_beams <= 8:
            raise InvalidInput(f"num_beams={self.num_beams} is out of range; send 1 to 8")
        if self.num_beams > 1 and self.temperature > 0:
            raise InvalidInput("beam search is deterministic: send temperature 0 with num_beams > 1")
        if len(self.prompt) > MAX_PROMPT_CHARS:
            raise InvalidInput(f"the prompt is {len(self.prompt)} characters; send at most {MAX_PROMPT_CHARS}")


@dataclass
class Caption:
    text: str
    tokens: int
    finish_reason: str                 # "stop" (end of text) | "length"


def sample_row(logits: np.ndarray, p: CaptionParams, rng: np.random.Generator) -> int:
    if p.temperature == 0:
        return int(logits.argmax())
    z = logits.astype(np.float64) / p.temperature
    if p.top_k:
        kth = np.partition(z, -p.top_k)[-p.top_k]
        z = np.where(z < kth, -np.inf, z)
    probs = np.exp(z - z.max())
    probs /= probs.sum()
    if p.top_p < 1.0:
        order = np.argsort(-probs)
        keep = np.cumsum(probs[order]) - probs[order] < p.top_p
        mask = np.zeros_like(probs, dtype=bool)
        mask[order[keep]] = True
        probs = np.where(mask, probs, 0.0)
        probs /= probs.sum()
    return int(np.searchsorted(np.cumsum(probs), rng.random(), side="right").clip(0, len(probs) - 1))


class CaptionEngine:
    backend_name = "onnxruntime"

    def __init__(self, bundle: Bundle, *, threads: int = 0, limits: ImageLimits = ImageLimits(),
                 max_batch: int = 16) -> None:
        from omniforge_shared.backends.onnxruntime_backend import OnnxDecoder
        from omniforge_shared.tokenizer import load_tokenizer

        self.bundle, self.limits, self.max_batch = bundle, limits, max_batch
        g, pre = bundle.manifest["graph"], bundle.manifest["preprocess"]
        self.spec = DecoderSpec(n_layer=g["n_layer"], n_head=g["n_head"], head_size=g["head_size"],
                                vocab_size=bundle.manifest["tokenizer"]["vocab_size"], context_length=g["context_length"])
        self.n_prefix, self.image_size = int(g["n_prefix"]), int(pre["image_size"])
        self.mean, self.std = tuple(pre["mean"]), tuple(pre["std"])
        self.encoder = cpu_session(bundle.file("image-encoder"), threads)
        self.decoder = OnnxDecoder(bundle.file("decoder"), self.spec, threads=threads, spin_wait=False,
                                   embed_dim=int(g["n_embd"]))
        self.wte = np.load(bundle.file("token-embeddings"))
        self.tokenizer = load_tokenizer(bundle.file("tokenizer"))
        self.eos = bundle.manifest["tokenizer"]["eos_id"]
        self.cache = KVCache(self.spec, max_batch)
        self.requests: queue.Queue = queue.Queue()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="caption-engine", daemon=True)
        self._thread.start()

    @property
    def max_tokens_limit(self) -> int:
        return self.spec.context_length - self.n_prefix - 8

    # ---- the public call ----------------------------------------------------------------------

    def submit(self, image: bytes, params: CaptionParams) -> Future:
        """Decodes and checks the image here (the caller's thread); the engine thread captions it."""
        params.check(self.max_tokens_limit)
        prompt_ids = self.tokenizer.encode(params.prompt) if params.prompt else []
        if self.n_prefix + len(prompt_ids) + params.max_tokens > self.spec.context_length:
            raise InvalidInput(f"the prompt and max_tokens={params.max_tokens} do not fit the model's context of "
                               f"{self.spec.context_length} tokens ({self.n_prefix} are the image); shorten them")
        try:
            img = decode_image(image, limits=self.limits)
        except ImageError as e:
            raise InvalidInput(str(e)) from None
        if self._stopping:
            raise RuntimeError("the caption engine is stopping")
        fut: Future = Future()
        pixels = to_model_input([img], self.image_size, self.mean, self.std)[0]
        self.requests.put((pixels, params, prompt_ids, fut))
        return fut

    # ---- the engine thread --------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self.requests.get()
            if first is None:
                return
            pending = [first]
            while len(pending) < self.max_batch:
                try:
                    nxt = self.requests.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self.requests.put(None)
                    break
                pending.append(nxt)
            # beams alone; greedy/sampling grouped by prompt
            groups: dict[tuple, list] = {}
            for req in pending:
                key = ("beam", id(req)) if req[1].num_beams > 1 else ("batch", tuple(req[2]))
                groups.setdefault(key, []).append(req)
            for key, reqs in groups.items():
                try:
                    results = self._beam(reqs[0]) if key[0] == "beam" else self._batch(reqs)
                    for req, res in zip(reqs, results):
                        req[3].set_result(res)
                except Exception as e:  # noqa: BLE001 - a failing batch fails its requests, not the engine
                    logger.exception("caption batch failed")
                    for req in reqs:
                        if not req[3].done():
                            req[3].set_exception(e)

    def _prefill(self, pixels: np.ndarray, prompt_ids: list[int], cache: KVCache) -> np.ndarray:
        """The first token's logits, with the end token ruled out: a caption says something (a blank
        or unfamiliar image would otherwise get an empty one)."""
        prefix = self.encoder.run(["prefix_embeds"], {"pixel_values": pixels})[0]             # (B, P, C)
        if prompt_ids:
            prompt = np.broadcast_to(self.wte[prompt_ids], (len(prefix), len(prompt_ids), self.wte.shape[1]))
            prefix = np.concatenate([prefix, prompt], axis=1)
        lengths = np.full(len(prefix), prefix.shape[1], np.int32)
        logits = self.decoder.forward(np.ascontiguousarray(prefix, np.float32), lengths, cache, 0)[:, -1].copy()
        logits[:, self.eos] = -np.inf
        return logits, lengths

    def _batch(self, reqs: list) -> list[Caption]:
        pixels = np.stack([r[0] for r in reqs])
        params = [r[1] for r in reqs]
        rngs = [np.random.default_rng(p.seed) for p in params]
        logits, lengths = self._prefill(pixels, reqs[0][2], self.cache)
        out = [[] for _ in reqs]
        done = [False] * len(reqs)
        reason = ["length"] * len(reqs)
        for step in range(max(p.max_tokens for p in params)):
            tokens = np.zeros(len(reqs), np.int64)
            for i, p in enumerate(params):
                if done[i]:
                    continue
                t = sample_row(logits[i], p, rngs[i])
                if t == self.eos:
                    done[i], reason[i] = True, "stop"
                else:
                    out[i].append(t)
                    done[i] = len(out[i]) >= p.max_tokens
                tokens[i] = t
            if all(done):
                break
            lengths = lengths + 1
            logits = self.decoder.forward(self.wte[tokens][:, None].astype(np.float32), lengths, self.cache, 0)[:, 0].copy()
        return [Caption(self.tokenizer.decode(ids).strip(), len(ids), r) for ids, r in zip(out, reason)]

    def _beam(self, req) -> list[Caption]:
        pixels, p, prompt_ids, _ = req
        k = p.num_beams
        cache = KVCache(self.spec, k)
        logits, lengths = self._prefill(np.repeat(pixels[None], k, axis=0), prompt_ids, cache)
        beams = [[] for _ in range(k)]
        scores = np.zeros(k)
        scores[1:] = -np.inf                         # all beams start as the same sequence
        finished: list[tuple[float, list[int], str]] = []
        for step in range(p.max_tokens):
            logp = logits - logits.max(-1, keepdims=True)
            logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
            total = (scores[:, None] + logp).ravel()
            order = np.argsort(-total)[:2 * k]
            new_beams, new_scores, rows, tokens = [], [], [], []
            for flat in order:
                row, tok = divmod(int(flat), logp.shape[1])
                if tok == self.eos:
                    finished.append((total[flat] / max(1, len(beams[row])), beams[row], "stop"))
                    continue
                new_beams.append(beams[row] + [tok])
                new_scores.append(total[flat])
                rows.append(row)
                tokens.append(tok)
                if len(new_beams) == k:
                    break
            if len(finished) >= k or not new_beams:
                break
            # reorder the cache rows to follow their beams (in place: the bindings point here)
            pos = int(lengths[0])
            for a in cache.arrays:
                a[:len(rows), :, :pos] = a[rows, :, :pos]
            beams, scores = new_beams, np.array(new_scores)
            lengths = np.full(len(beams), pos + 1, np.int32)
            emb = self.wte[np.array(tokens)][:, None].astype(np.float32)
            logits = self.decoder.forward(emb, lengths, cache, 0)[:, 0].copy()
        finished += [(s / max(1, len(b)), b, "length") for s, b in zip(scores, beams)]
        best = max(finished, key=lambda f: f[0])
        return [Caption(self.tokenizer.decode(best[1]).strip(), len(best[1]), best[2])]

    # ---- the pool's Engine protocol -------------------------------------------------------------

    def gauges(self) -> dict[str, float]:
        return {"caption_queue_depth_requests": float(self.requests.qsize())}

    def retire(self) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopping = True
        self.requests.put(None)
