"""Image-text datasets on disk: one folder every vision recipe reads.

    images.npy     uint8 (N, S, S, 3): every image decoded, composited on white, fitted to S x S
    items.jsonl    one line per image: {"index", "concept", "style", "source"}
    concepts.json  [{"id", "name", "captions": [...], "heldout_captions": [...], "split", ...}]
    dataset.json   manifest: counts, splits, styles, licenses, provenance, content hash

A *concept* is what an image shows. In the starter set one concept (an emoji) has an image in
each drawing style; in a user's data set each image is usually its own concept with its own
captions. Splits are by concept, so no image of a test concept is ever trained on.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from omniforge_shared.bundle import sha256_file

from .ingest import DataError

MANIFEST = "dataset.json"
FILES = ("images.npy", "items.jsonl", "concepts.json")
FORMAT = "image-text"
SPLITS = ("train", "val", "test")


def concept_split(concept_id: str, *, seed: int, val: float = 0.05, test: float = 0.10) -> str:
    """Deterministic split of a concept: depends only on its id and the seed."""
    u = int.from_bytes(hashlib.sha256(f"{seed}:{concept_id}".encode()).digest()[:8], "big") / 2**64
    return "test" if u < test else "val" if u < test + val else "train"


def content_hash(path: Path) -> str:
    h = hashlib.sha256()
    for fname in FILES:
        h.update(sha256_file(Path(path) / fname).encode())
    return h.hexdigest()


@dataclass
class ImageTextDataset:
    """An image-text dataset loaded for training or evaluation (images memory-mapped)."""
    path: Path
    manifest: dict
    images: np.ndarray                      # (N, S, S, 3) uint8
    concepts: list[dict]
    item_concept: np.ndarray                # (N,) int: index into concepts
    item_style: list[str]
    concept_index: dict[str, int] = field(default_factory=dict)

    @property
    def styles(self) -> list[str]:
        return list(self.manifest["styles"])

    @property
    def heldout_style(self) -> str | None:
        return self.manifest.get("heldout_style")

    def items(self, split: str, *, styles: list[str] | None = None, exclude_style: str | None = None) -> np.ndarray:
        """Indices of the images whose concept is in `split`, optionally filtered by style."""
        keep = [i for i, c in enumerate(self.item_concept)
                if self.concepts[c]["split"] == split
                and (styles is None or self.item_style[i] in styles)
                and (exclude_style is None or self.item_style[i] != exclude_style)]
        return np.asarray(keep, dtype=np.int64)

    def train_items(self) -> np.ndarray:
        """Training images: train concepts, every style but the held-out one."""
        return self.items("train", exclude_style=self.heldout_style)


def write_dataset(out: Path, *, images: np.ndarray, items: list[dict], concepts: list[dict],
                  manifest: dict) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"images must be uint8 (N, S, S, 3), got {images.dtype} {images.shape}")
    np.save(out / "images.npy", images)
    with (out / "items.jsonl").open("w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps(it, ensure_ascii=False) + "\n")
    (out / "concepts.json").write_text(json.dumps(concepts, ensure_ascii=False, indent=1), encoding="utf-8")
    per_split = {s: sum(1 for c in concepts if c["split"] == s) for s in SPLITS}
    manifest = {"format": FORMAT, "image_size": int(images.shape[1]),
                **manifest,
                "counts": {"images": len(items), "concepts": len(concepts),
                           "captions": sum(len(c["captions"]) for c in concepts),
                           **{f"{s}_concepts": n for s, n in per_split.items()},
                           **manifest.get("counts", {})},
                "content_hash": content_hash(out)}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    return manifest


def heldout_phrasing(concept: dict) -> str:
    """The phrasing of a concept that training never sees (its name where the data has none)."""
    return (concept.get("heldout_captions") or [concept["name"]])[0]


def is_image_text(path: Path) -> bool:
    try:
        return json.loads((Path(path) / MANIFEST).read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def load_image_text(path: Path, *, verify: bool = False) -> ImageTextDataset:
    path = Path(path)
    if not (path / MANIFEST).exists():
        raise DataError(f"{path} is not a dataset (no {MANIFEST}); build one with "
                        "`omniforge data starter-images` or `omniforge data images`")
    manifest = json.loads((path / MANIFEST).read_text())
    if manifest.get("format") != FORMAT:
        raise DataError(f"{path} is a {manifest.get('format')!r} dataset; this recipe needs an image-text dataset")
    for fname in FILES:
        if not (path / fname).exists():
            raise DataError(f"dataset {path} is missing {fname}; rebuild it")
    if verify and content_hash(path) != manifest["content_hash"]:
        raise DataError(f"dataset {path}: its files do not match the content hash in {MANIFEST}; rebuild it")
    concepts = json.loads((path / "concepts.json").read_text(encoding="utf-8"))
    index = {c["id"]: i for i, c in enumerate(concepts)}
    item_concept, item_style = [], []
    with (path / "items.jsonl").open(encoding="utf-8") as f:
        for line in f:
            it = json.loads(line)
            item_concept.append(index[it["concept"]])
            item_style.append(it.get("style", "default"))
    images = np.load(path / "images.npy", mmap_mode="r")
    return ImageTextDataset(path=path, manifest=manifest, images=images, concepts=concepts,
                            item_concept=np.asarray(item_concept, dtype=np.int64), item_style=item_style,
                            concept_index=index)
