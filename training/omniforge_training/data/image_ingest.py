"""Reads image-text pairs from the formats people have, into an image-text dataset folder.

  coco          a COCO captions JSON (`images` + `annotations`), images in a folder beside it
  webdataset    .tar shards as img2dataset writes them (`.jpg`/`.png`/`.webp` + `.txt`/`.json`),
                streamed with the `webdataset` package, never unpacked
  imagefolder   a Hugging Face imagefolder: images + `metadata.jsonl` or `metadata.csv`
  parquet       a Parquet file with image bytes (a binary column, or HF's {bytes, path} struct)

Every image goes through `omniforge_shared.images.decode_image` (EXIF orientation, alpha on
white, CMYK / palette / 16-bit to RGB, size limits), then is resized and centre-cropped to the
dataset's size. An image that cannot be read is skipped and listed in the data card; it never
stops the build. Each image becomes its own concept with its own captions.
"""
from __future__ import annotations

import csv
import hashlib
import json
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from omniforge_shared.bundle import sha256_file
from omniforge_shared.images import ImageError, decode_image, fit_square

from .image_text import concept_split, write_dataset
from .ingest import DataError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
CAPTION_FIELDS = ("caption", "text", "captions", "sentences", "alt", "title")
SUPPORTED = ("a COCO captions .json, WebDataset .tar shards (a file, a folder of them or a brace pattern), "
             "a Hugging Face imagefolder (with metadata.jsonl or metadata.csv), or a .parquet file with image bytes")


def detect_image_format(source: str) -> str:
    if "{" in source and ".tar" in source:
        return "webdataset"
    path = Path(source)
    if not path.exists():
        raise DataError(f"{source} does not exist; give {SUPPORTED}")
    if path.is_dir():
        if (path / "metadata.jsonl").exists() or (path / "metadata.csv").exists():
            return "imagefolder"
        if list(path.glob("*.tar")):
            return "webdataset"
        raise DataError(f"{path} is a folder without metadata.jsonl/metadata.csv or .tar shards; give {SUPPORTED}")
    if path.suffix == ".tar":
        return "webdataset"
    if path.suffix == ".json":
        return "coco"
    if path.suffix == ".parquet":
        return "parquet"
    raise DataError(f"{path.name}: unknown format; give {SUPPORTED}")


def _captions(value) -> list[str]:
    """A caption field's value -> a list of non-empty captions."""
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    if isinstance(value, list):
        return [c for v in value for c in _captions(v.get("raw") or v.get("caption") if isinstance(v, dict) else v)]
    if isinstance(value, dict):
        return _captions(next((value[f] for f in CAPTION_FIELDS if f in value), None))
    return []


def _from_row(row: dict) -> list[str]:
    for f in CAPTION_FIELDS:
        if f in row and _captions(row[f]):
            return _captions(row[f])
    return []


# ---- readers: each yields (key, image bytes, captions) ------------------------------------------

def read_coco(path: Path, image_root: Path | None = None) -> Iterator[tuple[str, bytes, list[str]]]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise DataError(f"{path} is not a COCO captions file: it needs `images` and `annotations`")
    root = Path(image_root) if image_root else _coco_root(Path(path))
    caps: dict = {}
    for a in data["annotations"]:
        caps.setdefault(a["image_id"], []).append(str(a.get("caption", "")).strip())
    for img in data["images"]:
        f = root / img["file_name"]
        if not f.is_file():
            yield str(img["id"]), b"", caps.get(img["id"], [])    # counted as unreadable
            continue
        yield str(img["id"]), f.read_bytes(), [c for c in caps.get(img["id"], []) if c]


def _coco_root(path: Path) -> Path:
    for cand in (path.parent / "images", path.parent.parent / "images", path.parent):
        if cand.is_dir():
            return cand
    return path.parent


def read_webdataset(source: str) -> Iterator[tuple[str, bytes, list[str]]]:
    import webdataset as wds

    path = Path(source)
    urls = sorted(str(p) for p in path.glob("*.tar")) if path.is_dir() else source
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        key = sample["__key__"]
        image = next((sample[e[1:]] for e in IMAGE_EXTS if e[1:] in sample), b"")
        captions = []
        if "txt" in sample:
            captions = _captions(sample["txt"].decode("utf-8", "replace"))
        if not captions and "json" in sample:
            try:
                captions = _from_row(json.loads(sample["json"]))
            except ValueError:
                pass
        yield key, image, captions


def read_imagefolder(path: Path) -> Iterator[tuple[str, bytes, list[str]]]:
    path = Path(path)
    if (path / "metadata.jsonl").exists():
        with (path / "metadata.jsonl").open(encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    else:
        with (path / "metadata.csv").open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    for i, row in enumerate(rows):
        name = row.get("file_name")
        if not name:
            raise DataError(f"{path}: metadata row {i + 1} has no file_name")
        f = (path / name).resolve()
        if path.resolve() not in f.parents:
            raise DataError(f"{path}: metadata row {i + 1} points outside the folder ({name})")
        yield name, f.read_bytes() if f.is_file() else b"", _from_row(row)


def read_parquet(path: Path) -> Iterator[tuple[str, bytes, list[str]]]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    image_col = next((c for c in ("image", "jpg", "png", "img", "image_bytes") if c in names), None)
    if image_col is None:
        raise DataError(f"{path} has no image column (image, jpg, png, img or image_bytes); columns: {names}")
    n = 0
    for batch in pf.iter_batches(batch_size=256):
        for row in batch.to_pylist():
            value = row[image_col]
            image = value.get("bytes") if isinstance(value, dict) else value
            key = str(row.get("key") or row.get("id") or n)
            n += 1
            yield key, image or b"", _from_row(row)


READERS = {"coco": read_coco, "webdataset": read_webdataset, "imagefolder": read_imagefolder, "parquet": read_parquet}


def build_image_text_dataset(source: str, out: Path, *, name: str, size: int = 64, seed: int = 1337,
                             image_root: Path | None = None, limit: int | None = None, log=print,
                             progress: bool = True) -> dict:
    """Any supported source -> an image-text dataset folder (images fitted to size x size)."""
    t0 = time.time()
    fmt = detect_image_format(str(source))
    reader = READERS[fmt]
    pairs = reader(Path(source), image_root) if fmt == "coco" else reader(source if fmt == "webdataset" else Path(source))
    if progress:
        from tqdm import tqdm
        pairs = tqdm(pairs, desc=f"ingest {fmt}", unit="img")
    images, items, concepts, skipped, seen = [], [], [], [], set()
    for key, data, captions in pairs:
        if limit and len(items) >= limit:
            break
        if not captions:
            skipped.append({"key": key, "reason": "no caption"})
            continue
        try:
            img = decode_image(data)
        except ImageError as e:
            skipped.append({"key": key, "reason": str(e)})
            continue
        digest = hashlib.sha256(data).hexdigest()[:16]
        cid = f"{key}"
        if cid in seen:
            cid = f"{key}-{digest}"
        seen.add(cid)
        images.append(np.asarray(fit_square(img, size), dtype=np.uint8))
        concepts.append({"id": cid, "name": captions[0], "captions": captions, "heldout_captions": [],
                         "split": concept_split(cid, seed=seed)})
        items.append({"index": len(items), "concept": cid, "style": "default", "source": key, "sha256": digest})
    if not items:
        reasons = sorted({s["reason"] for s in skipped})[:3]
        raise DataError(f"no usable image-text pairs in {source} ({len(skipped)} skipped: {reasons})")
    provenance = {"path": Path(str(source)).name, "format": fmt}
    if Path(str(source)).is_file():
        provenance["sha256"] = sha256_file(Path(source))
    manifest = write_dataset(Path(out), images=np.stack(images), items=items, concepts=concepts, manifest={
        "name": name, "styles": ["default"], "heldout_style": None,
        "split": {"method": "sha256(seed:concept_id)", "by": "image", "train": 0.85, "val": 0.05, "test": 0.10,
                  "seed": seed},
        "preprocessing": {"size": size, "resize": "short side, centre crop", "background": "white"},
        "sources": [provenance], "licenses": {"source": {"license": "as given by the source"}},
        "counts": {"skipped": len(skipped)}, "skipped": skipped[:100],
        "build_seconds": round(time.time() - t0, 1),
    })
    log(f"dataset {name}: {len(items)} images ({len(skipped)} skipped) from {fmt}")
    return manifest
