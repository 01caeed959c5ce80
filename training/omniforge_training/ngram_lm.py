"""Word n-gram language models for the recognizer's beam search, written as ARPA files.

Interpolated modified Kneser-Ney (Chen and Goodman, 1998) in plain Python: the counts of the
highest order are raw counts, lower orders use continuation counts (how many distinct words
precede an n-gram), three discounts per order from the count-of-counts. The ARPA file is read
by KenLM inside flashlight-text; nothing here needs KenLM's `lmplz` (not on PyPI).
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable

BOS, EOS, UNK = "<s>", "</s>", "<unk>"


def _discounts(counts: Counter) -> tuple[float, float, float]:
    n = Counter(min(c, 4) for c in counts.values())
    n1, n2, n3, n4 = (n.get(k, 0) for k in (1, 2, 3, 4))
    if not (n1 and n2 and n3 and n4):
        return 0.5, 1.0, 1.5
    y = n1 / (n1 + 2 * n2)
    d = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    return tuple(min(max(x, 0.05), k + 0.0) for x, k in zip(d, (1, 2, 3)))


def train_kneser_ney(sentences: Iterable[list[str]], order: int = 3, *, min_count: int = 1,
                     extra_vocab: Iterable[str] = ()) -> dict:
    """-> {"order", "vocab", "grams": [ {ngram tuple: (log10 prob, log10 backoff)} per order ]}.
    `extra_vocab`: words the text never uses that the model should still predict; like every
    word, they get the uniform share of the unigram interpolation (and nothing more)."""
    counts = [Counter() for _ in range(order)]
    for words in sentences:
        seq = [BOS] + list(words) + [EOS]
        for n in range(1, order + 1):
            for i in range(max(0, 1 if n == 1 else 0), len(seq) - n + 1):
                counts[n - 1][tuple(seq[i:i + n])] += 1
    # continuation counts for the lower orders: distinct left contexts (of the unpruned counts)
    adjusted = [Counter() for _ in range(order)]
    adjusted[-1] = counts[-1]
    for n in range(order - 1, 0, -1):
        for g in counts[n]:
            adjusted[n - 1][g[1:]] += 1
        for g, c in counts[n - 1].items():          # n-grams starting with <s> have no left context
            if g[0] == BOS:
                adjusted[n - 1][g] = c
    if min_count > 1 and order > 1:                     # prune rare top-order n-grams (keeps the file small)
        adjusted[-1] = Counter({g: c for g, c in counts[-1].items() if c >= min_count})
    vocab = sorted({g[0] for g in counts[0]} | set(extra_vocab) | {UNK, BOS, EOS})
    probs: list[dict] = [dict() for _ in range(order)]
    backoff: list[dict] = [defaultdict(float) for _ in range(order)]
    # unigrams: interpolate with uniform
    d = _discounts(adjusted[0])
    total = sum(adjusted[0].values())
    kinds = Counter(min(c, 3) for c in adjusted[0].values())
    gamma = (d[0] * kinds[1] + d[1] * kinds[2] + d[2] * kinds[3]) / total
    predictable = len(vocab) - 1                        # every word but <s> (never predicted)
    for w in vocab:
        c = adjusted[0].get((w,), 0)
        p = max(c - (d[min(c, 3) - 1] if c else 0), 0) / total + gamma / predictable
        probs[0][(w,)] = p
    probs[0][(BOS,)] = 0.0
    for n in range(2, order + 1):
        cnt = adjusted[n - 1]
        d = _discounts(cnt)
        ctx_total: dict = defaultdict(int)
        ctx_kinds: dict = defaultdict(lambda: [0, 0, 0])
        for g, c in (counts[-1] if n == order else cnt).items():     # totals over the unpruned counts
            ctx_total[g[:-1]] += c
            ctx_kinds[g[:-1]][min(c, 3) - 1] += 1
        for g, c in cnt.items():
            ctx = g[:-1]
            k = ctx_kinds[ctx]
            gam = (d[0] * k[0] + d[1] * k[1] + d[2] * k[2]) / ctx_total[ctx]
            lower = _prob(probs, g[1:])
            probs[n - 1][g] = (c - d[min(c, 3) - 1]) / ctx_total[ctx] + gam * lower
        for ctx, tot in ctx_total.items():
            k = ctx_kinds[ctx]
            backoff[n - 2][ctx] = (d[0] * k[0] + d[1] * k[1] + d[2] * k[2]) / tot
    grams = []
    for n in range(order):
        level = {}
        for g, p in probs[n].items():
            lp = -99.0 if g == (BOS,) else math.log10(max(p, 1e-99))
            bo = backoff[n].get(g) if n < order - 1 else None
            level[g] = (lp, math.log10(bo) if bo else (0.0 if n < order - 1 else None))
        grams.append(level)
    return {"order": order, "vocab": vocab, "grams": grams}


def _prob(probs: list[dict], g: tuple) -> float:
    """The interpolated probability of g from the orders computed so far (lower ones complete)."""
    n = len(g)
    if g in probs[n - 1]:
        return probs[n - 1][g]
    if n == 1:
        return probs[0][(UNK,)]
    return _prob(probs, g[1:])          # unseen at this order: the interpolation weight is applied by the caller


def write_arpa(lm: dict, path: Path) -> None:
    path = Path(path)
    with path.open("w", encoding="utf-8") as f:
        f.write("\\data\\\n")
        for n, level in enumerate(lm["grams"], 1):
            f.write(f"ngram {n}={len(level)}\n")
        for n, level in enumerate(lm["grams"], 1):
            f.write(f"\n\\{n}-grams:\n")
            for g in sorted(level):
                lp, bo = level[g]
                f.write(f"{lp:.6f}\t{' '.join(g)}" + (f"\t{bo:.6f}" if bo is not None and n < lm["order"] else "") + "\n")
        f.write("\n\\end\\\n")


def perplexity(lm: dict, sentences: Iterable[list[str]]) -> float:
    """Per-word perplexity (with </s>) under the ARPA back-off semantics, for checks and the model card."""
    order, grams = lm["order"], lm["grams"]
    total, n = 0.0, 0
    for words in sentences:
        seq = [BOS] + [w if (w,) in grams[0] else UNK for w in words] + [EOS]
        for i in range(1, len(seq)):
            total += _score(grams, tuple(seq[max(0, i - order + 1):i + 1]))
            n += 1
    return 10 ** (-total / max(1, n))


def _score(grams: list[dict], g: tuple) -> float:
    n = len(g)
    if g in grams[n - 1]:
        return grams[n - 1][g][0]
    if n == 1:
        return grams[0][(UNK,)][0]
    bo = grams[n - 2].get(g[:-1], (0.0, 0.0))[1] or 0.0
    return bo + _score(grams, g[1:])
