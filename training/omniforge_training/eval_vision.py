"""Retrieval metrics of an aligned image-text model on an image-text dataset.

Recall@K, both ways, on the splits the issue asks for:
  heldout_style     images in the style never trained on, of training concepts, against every concept name
  unseen_concepts   images of test concepts (trained styles), against the test concepts' names
  unseen_all_names  the same images, against every concept name (the harder, honest variant)
  val               validation concepts, against their names (what training watches)
image->text: is the image's concept among the K nearest names? text->image: is an image of
the name's concept among the K nearest images?
"""
from __future__ import annotations

import numpy as np

KS = (1, 5, 10)


def recall_at_k(sim: np.ndarray, query_concept: np.ndarray, cand_concept: np.ndarray, ks=KS) -> dict:
    """sim (Q, C); a query hits at K when one of its K most similar candidates has its concept."""
    order = np.argsort(-sim, axis=1)[:, :max(ks)]
    hits = cand_concept[order] == query_concept[:, None]          # (Q, Kmax)
    return {f"R@{k}": float(hits[:, :k].any(1).mean()) for k in ks}


def retrieval(image_emb: np.ndarray, image_concept: np.ndarray, name_emb: np.ndarray,
              name_concept: np.ndarray) -> dict:
    """Both directions between a set of images and a set of concept names (unit vectors)."""
    sim = image_emb @ name_emb.T
    out = {f"i2t_{k}": v for k, v in recall_at_k(sim, image_concept, name_concept).items()}
    # text -> image only for names that have an image among the candidates
    has = np.isin(name_concept, image_concept)
    out |= {f"t2i_{k}": v for k, v in recall_at_k(sim.T[has], name_concept[has], image_concept).items()}
    out["queries"] = int(len(image_concept))
    out["names"] = int(len(name_concept))
    return out


def retrieval_suite(ds, embed_images, name_emb: np.ndarray, *, splits=("val", "heldout_style", "unseen_concepts",
                                                                        "unseen_all_names"),
                    max_queries: int | None = None, seed: int = 0) -> dict:
    """`embed_images(indices) -> (n, D)`; `name_emb` (n_concepts, D): one canonical name per concept."""
    n_concepts = len(ds.concepts)
    all_concepts = np.arange(n_concepts)
    split_of = np.array([c["split"] for c in ds.concepts])
    rng = np.random.default_rng(seed)
    out = {}
    for split in splits:
        if split == "heldout_style":
            if not ds.heldout_style:
                continue
            idx = ds.items("train", styles=[ds.heldout_style])
            names = all_concepts
        elif split in ("unseen_concepts", "unseen_all_names"):
            idx = ds.items("test", exclude_style=ds.heldout_style)
            names = all_concepts if split == "unseen_all_names" else all_concepts[split_of == "test"]
        else:
            idx = ds.items(split, exclude_style=ds.heldout_style)
            names = all_concepts[split_of == split]
        if len(idx) == 0:
            continue
        if max_queries and len(idx) > max_queries:
            idx = np.sort(rng.choice(idx, max_queries, replace=False))
        emb = embed_images(idx)
        out[split] = retrieval(emb, ds.item_concept[idx], name_emb[names], names)
    return out
