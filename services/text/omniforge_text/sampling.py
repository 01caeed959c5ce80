"""Turning one row of logits into one token: penalties, temperature, top-k, top-p."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 64
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = None
    ignore_eos: bool = False            # keep going past the end-of-text token (benchmarks)

    def problems(self, *, max_tokens_limit: int) -> list[str]:
        """What is wrong with these parameters, each phrased as what to send instead."""
        out = []
        if not 1 <= self.max_tokens <= max_tokens_limit:
            out.append(f"max_tokens={self.max_tokens} is out of range; send 1..{max_tokens_limit}")
        if math.isnan(self.temperature) or not 0 <= self.temperature <= 10:
            out.append(f"temperature={self.temperature} is out of range; send 0 (greedy) to 10")
        if self.top_k < 0:
            out.append(f"top_k={self.top_k} is negative; send 0 (off) or a positive count")
        if math.isnan(self.top_p) or not 0 < self.top_p <= 1:
            out.append(f"top_p={self.top_p} is out of range; send a value in (0, 1]")
        if math.isnan(self.repetition_penalty) or not 0 < self.repetition_penalty <= 10:
            out.append(f"repetition_penalty={self.repetition_penalty} is out of range; send (0, 10], 1 = off")
        if len(self.stop) > 8 or any(not s for s in self.stop):
            out.append("stop must be at most 8 non-empty strings")
        return out


def sample_token(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator,
                 seen: np.ndarray | None = None) -> int:
    """logits: (V,) float32. `seen`: token ids already in the context (for the penalty)."""
    logits = logits.astype(np.float64, copy=True)
    # 1. repetition penalty (CTRL): make already-seen tokens less likely
    if params.repetition_penalty != 1.0 and seen is not None and len(seen):
        ids = np.unique(seen)
        vals = logits[ids]
        logits[ids] = np.where(vals > 0, vals / params.repetition_penalty, vals * params.repetition_penalty)
    # 2. greedy
    if params.temperature == 0:
        return int(np.argmax(logits))
    logits /= params.temperature
    # 3. top-k: keep the k largest
    if 0 < params.top_k < logits.size:
        kth = np.partition(logits, -params.top_k)[-params.top_k]
        logits[logits < kth] = -np.inf
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    # 4. top-p: the smallest set of tokens whose probability adds up to p
    if params.top_p < 1.0:
        order = np.argsort(-probs)
        cumulative = np.cumsum(probs[order])
        cutoff = int(np.searchsorted(cumulative, params.top_p)) + 1
        keep = np.zeros_like(probs, dtype=bool)
        keep[order[:cutoff]] = True
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum()
    # 5. draw by inverse CDF: what rng.choice(p=probs) does with the same one uniform draw,
    # without its checks of p (a tenth of a decode step at batch 8)
    cdf = np.cumsum(probs)
    return min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), probs.size - 1)


def sample_tokens(logits: np.ndarray, params: list[SamplingParams], rngs: list[np.random.Generator],
                  seen: list[list[int]]) -> list[int]:
    """One token per row of logits (B, V), each drawn as sample_token draws it. Greedy rows take
    one argmax together and rows with a temperature alone (no penalty, top-k or top-p: the
    common case) one batched softmax and draw; the rest are sampled row by row."""
    tokens = [0] * len(params)
    greedy, plain = [], []
    for i, p in enumerate(params):
        if p.repetition_penalty != 1.0 or (p.temperature and (p.top_k or p.top_p < 1.0)):
            penalised = np.array(seen[i], np.int64) if p.repetition_penalty != 1.0 else None
            tokens[i] = sample_token(logits[i], p, rngs[i], penalised)
        elif p.temperature == 0:
            greedy.append(i)
        else:
            plain.append(i)
    if greedy:
        for i, token in zip(greedy, logits[greedy].argmax(-1).tolist()):
            tokens[i] = token
    if plain:
        # the same steps as sample_token's 2., 5., on every plain row at once (float64, as there)
        z = logits[plain].astype(np.float64)
        z /= np.array([params[i].temperature for i in plain])[:, None]
        z -= z.max(-1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(-1, keepdims=True)
        cdf = np.cumsum(z, axis=-1)
        draws = np.array([rngs[i].random() for i in plain]) * cdf[:, -1]
        # searchsorted(cdf, draw, side="right") is the number of cdf values <= draw
        picked = np.minimum((cdf <= draws[:, None]).sum(-1), z.shape[-1] - 1)
        for i, token in zip(plain, picked.tolist()):
            tokens[i] = token
    return tokens
