"""Image-text data in the formats people have: COCO, WebDataset shards, imagefolder, Parquet."""
import csv
import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from omniforge_training.data.image_ingest import build_image_text_dataset
from omniforge_training.data.image_text import load_image_text
from omniforge_training.data.ingest import DataError


def jpeg(seed: int, size=(80, 60)) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    return buf.getvalue()


PAIRS = [(f"{i:04d}", jpeg(i), f"picture number {i}") for i in range(6)]
BROKEN = ("broken", b"not an image at all", "a caption whose image is broken")


def check(out, n=6):
    ds = load_image_text(out, verify=True)
    assert ds.images.shape == (n, 32, 32, 3)
    assert sorted(c["name"] for c in ds.concepts) == sorted(p[2] for p in PAIRS[:n])
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["counts"]["skipped"] == 1 and "not an image format" in manifest["skipped"][0]["reason"]
    return ds


def test_coco(tmp_path):
    (tmp_path / "images").mkdir()
    images, annotations = [], []
    for i, (key, data, caption) in enumerate(PAIRS + [BROKEN]):
        (tmp_path / "images" / f"{key}.jpg").write_bytes(data)
        images.append({"id": i, "file_name": f"{key}.jpg"})
        annotations += [{"image_id": i, "caption": caption}, {"image_id": i, "caption": caption + ", again"}]
    (tmp_path / "captions_train.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    build_image_text_dataset(str(tmp_path / "captions_train.json"), tmp_path / "out", name="coco", size=32,
                             progress=False, log=lambda m: None)
    ds = check(tmp_path / "out")
    assert all(len(c["captions"]) == 2 for c in ds.concepts)


def test_webdataset_shards_are_streamed(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    for shard, chunk in enumerate((PAIRS[:3], PAIRS[3:] + [BROKEN])):
        with tarfile.open(shards / f"{shard:05d}.tar", "w") as tar:
            for key, data, caption in chunk:
                for ext, payload in (("jpg", data), ("txt", caption.encode()),
                                     ("json", json.dumps({"caption": caption, "key": key}).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    build_image_text_dataset(str(shards), tmp_path / "out", name="wds", size=32, progress=False, log=lambda m: None)
    check(tmp_path / "out")
    pattern = str(shards / "{00000..00001}.tar")
    build_image_text_dataset(pattern, tmp_path / "out2", name="wds", size=32, progress=False, log=lambda m: None)
    check(tmp_path / "out2")


@pytest.mark.parametrize("metadata", ["jsonl", "csv"])
def test_imagefolder(tmp_path, metadata):
    for key, data, _ in PAIRS + [BROKEN]:
        (tmp_path / f"{key}.jpg").write_bytes(data)
    rows = [{"file_name": f"{k}.jpg", "text": c} for k, _, c in PAIRS + [BROKEN]]
    if metadata == "jsonl":
        (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    else:
        with open(tmp_path / "metadata.csv", "w", newline="") as f:
            w = csv.DictWriter(f, ["file_name", "text"])
            w.writeheader()
            w.writerows(rows)
    build_image_text_dataset(str(tmp_path), tmp_path / "out", name="folder", size=32, progress=False, log=lambda m: None)
    check(tmp_path / "out")


def test_parquet_with_hf_image_structs(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = PAIRS + [BROKEN]
    table = pa.table({"image": [{"bytes": d, "path": f"{k}.jpg"} for k, d, _ in rows],
                      "caption": [c for _, _, c in rows]})
    pq.write_table(table, tmp_path / "pairs.parquet")
    build_image_text_dataset(str(tmp_path / "pairs.parquet"), tmp_path / "out", name="pq", size=32, progress=False,
                             log=lambda m: None)
    check(tmp_path / "out")


def test_unknown_or_empty_sources_are_clear(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_image_text_dataset(str(tmp_path / "nope.json"), tmp_path / "o", name="x", progress=False)
    (tmp_path / "a.xyz").write_text("?")
    with pytest.raises(DataError, match="unknown format"):
        build_image_text_dataset(str(tmp_path / "a.xyz"), tmp_path / "o", name="x", progress=False)
    (tmp_path / "bad.json").write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match="needs `images` and `annotations`"):
        build_image_text_dataset(str(tmp_path / "bad.json"), tmp_path / "o", name="x", progress=False)
