"""Caption quality: BLEU-4 (sacrebleu), CIDEr-D, exact match, diversity and self-retrieval.

With one short concept name (and three phrasings of it) per image, BLEU and CIDEr are noisy:
exact match (the caption is one of the references) says more. Self-retrieval asks the aligned
model whether the caption, as a text query, finds an image of its own concept first.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import torch


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def cider_d(hyps: list[str], refs: list[list[str]], *, n: int = 4, sigma: float = 6.0) -> float:
    """CIDEr-D (Vedantam et al. 2015, as in the COCO evaluation code): TF-IDF n-gram cosine with
    clipped counts and a length penalty, averaged over n = 1..4, times 10."""
    tok = lambda s: s.lower().split()
    ref_grams = [[[_ngrams(tok(r), k) for k in range(1, n + 1)] for r in rs] for rs in refs]
    df = [Counter() for _ in range(n)]
    for rs in ref_grams:
        for k in range(n):
            for g in set().union(*(r[k] for r in rs)):
                df[k][g] += 1
    log_n = math.log(max(1, len(refs)))

    def vec(grams: Counter, k: int) -> tuple[dict, float]:
        v = {g: c * (log_n - math.log(max(1.0, df[k][g]))) for g, c in grams.items()}
        return v, math.sqrt(sum(x * x for x in v.values()))

    scores = []
    for h, rs, rg in zip(hyps, refs, ref_grams):
        hw = tok(h)
        total = 0.0
        for k in range(n):
            hv, hn = vec(_ngrams(hw, k + 1), k)
            acc = 0.0
            for r, grams in zip(rs, rg):
                rv, rn = vec(grams[k], k)
                dot = sum(min(hv[g], rv[g]) * rv[g] for g in hv if g in rv)
                if hn and rn:
                    acc += dot / (hn * rn) * math.exp(-((len(hw) - len(tok(r))) ** 2) / (2 * sigma ** 2))
            total += acc / len(rs)
        scores.append(total / n * 10.0)
    return float(np.mean(scores)) if scores else 0.0


def bleu4(hyps: list[str], refs: list[list[str]]) -> float:
    import sacrebleu

    n_refs = max(map(len, refs))
    streams = [[rs[i] if i < len(rs) else rs[0] for rs in refs] for i in range(n_refs)]
    return float(sacrebleu.corpus_bleu(hyps, streams).score)


@torch.no_grad()
def caption_suite(model, ds, tok, prefix_of, *, clip, eos: int, max_tokens: int = 24, max_queries: int = 600,
                  references: int = 4, grid: Path | None = None) -> dict:
    """Greedy captions of each split's images, scored; `grid`: also a PNG of held-out-style and
    unseen-concept images with their captions, the truth in brackets."""
    from .models.minilm import MiniLM, encode_texts
    from .train_caption import COLOUR_PROMPT, colour_words, greedy_captions
    from .train_clip import embed_images

    splits = {"unseen_concepts": ds.items("test", exclude_style=ds.heldout_style),
              "val": ds.items("val", exclude_style=ds.heldout_style)}
    if ds.heldout_style:
        splits["heldout_style"] = ds.items("train", styles=[ds.heldout_style])
    rng = np.random.default_rng(0)
    tower = MiniLM() if clip.text is None else None
    out, shown = {}, {}
    for split, idx in splits.items():
        if len(idx) == 0:
            continue
        if len(idx) > max_queries:
            idx = np.sort(rng.choice(idx, max_queries, replace=False))
        t = torch.from_numpy(idx)
        caps = [tok.decode(c).strip() for c in greedy_captions(model, prefix_of(t), eos=eos, max_tokens=max_tokens)]
        refs = [ds.concepts[ds.item_concept[i]]["captions"][:references] for i in idx]
        exact = float(np.mean([c.lower() in {r.lower() for r in rs} for c, rs in zip(caps, refs)]))
        # self-retrieval: the caption as a query against the split's images (through the MiniLM tower)
        self_r1 = None
        if tower is not None:
            img = embed_images(clip, ds.images, idx)
            txt = torch.nn.functional.normalize(clip.text_proj(encode_texts(caps, model=tower)), dim=-1).numpy()
            top = (txt @ img.T).argmax(1)
            self_r1 = float(np.mean(ds.item_concept[idx][top] == ds.item_concept[idx]))
        colour = [tok.decode(c).strip() for c in greedy_captions(model, prefix_of(t[:200]), eos=eos,
                                                                  max_tokens=8, prompt=tok.encode(COLOUR_PROMPT))]
        colour_ok = float(np.mean([c == colour_words(np.asarray(ds.images[i])) for c, i in zip(colour, idx[:200])]))
        out[split] = {"bleu4": bleu4(caps, refs), "cider_d": cider_d(caps, refs), "exact_match": exact,
                      "self_retrieval_R@1": self_r1, "distinct_share": len(set(caps)) / len(caps),
                      "colour_prompt_exact": colour_ok, "queries": int(len(idx)),
                      "examples": [{"caption": c, "reference": rs[0]} for c, rs in list(zip(caps, refs))[:8]]}
        # spread over the split (its first images are all faces)
        pick = np.linspace(0, len(idx) - 1, 16).astype(int)
        shown[split] = [(np.asarray(ds.images[idx[j]]), f"{caps[j]} [{refs[j][0]}]") for j in pick]
    if grid is not None:
        from .eval_diffusion import sample_grid

        cells = shown.get("heldout_style", [])[:12] + shown.get("unseen_concepts", [])[:4]
        if cells:
            sample_grid(np.stack([c[0] for c in cells]), [c[1] for c in cells], Path(grid), cols=8, scale=2)
    return out
