"""The starter image set, built by our builder from the offline packages: styles, captions, splits."""
import json

import numpy as np

from omniforge_training.data.image_text import concept_split, load_image_text
from omniforge_training.data.starter_images import STYLES, fit_drawing


def test_every_style_of_a_concept_is_there_on_one_background(tiny_images):
    ds = load_image_text(tiny_images, verify=True)
    assert ds.images.shape[1:] == (64, 64, 3) and ds.images.dtype == np.uint8
    assert set(ds.item_style) == set(STYLES)
    # most concepts are drawn in all four styles; none in fewer than two
    styles_of = {}
    for c, s in zip(ds.item_concept, ds.item_style):
        styles_of.setdefault(c, set()).add(s)
    assert min(map(len, styles_of.values())) >= 2
    assert sum(len(v) == 4 for v in styles_of.values()) >= 0.7 * len(styles_of)
    # the same white border around every image, whatever its style: style cannot leak through it
    corners = ds.images[:, :3, :3].reshape(len(ds.images), -1)
    assert (corners == 255).all()


def test_captions_come_from_cldr_names_in_several_phrasings(tiny_images):
    ds = load_image_text(tiny_images)
    names = {c["name"] for c in ds.concepts}
    assert "grinning face" in names
    for c in ds.concepts:
        assert len(c["captions"]) >= 4 and c["name"] in c["captions"]
        assert c["heldout_captions"] and not set(c["heldout_captions"]) & set(c["captions"])


def test_splits_are_by_concept_and_deterministic(tiny_images):
    ds = load_image_text(tiny_images)
    for c in ds.concepts:
        assert c["split"] == concept_split(c["id"], seed=ds.manifest["split"]["seed"])
    train = ds.train_items()
    assert all(ds.concepts[ds.item_concept[i]]["split"] == "train" for i in train)
    assert ds.heldout_style not in {ds.item_style[i] for i in train}
    # across the whole starter list the split is about 85 / 5 / 10
    ids = [f"{i:05x}" for i in range(5000)]
    share = {s: sum(concept_split(i, seed=1337) == s for i in ids) / len(ids) for s in ("train", "val", "test")}
    assert abs(share["train"] - 0.85) < 0.03 and abs(share["test"] - 0.10) < 0.02


def test_the_data_card_records_licenses_and_provenance(tiny_images):
    manifest = json.loads((tiny_images / "dataset.json").read_text())
    assert {v["license"] for v in manifest["licenses"].values()} == {"OFL-1.1", "CC-BY-4.0", "CC-BY-SA-4.0", "MIT"}
    assert manifest["counts"]["images"] == len(load_image_text(tiny_images).item_style)
    assert len(manifest["content_hash"]) == 64 and manifest["heldout_style"] == "twemoji"


def test_fit_drawing_centres_any_drawing_in_the_same_box():
    from PIL import Image

    small = Image.new("RGBA", (30, 10), (0, 0, 0, 0))
    small.paste((255, 0, 0, 255), (5, 2, 25, 8))
    out = fit_drawing(small, size=64, box=56)
    ys, xs = np.where(out[..., 1] < 128)
    assert xs.max() - xs.min() + 1 == 56                       # the long side fills the box
    assert abs((xs.min() + xs.max()) / 2 - 31.5) <= 1 and abs((ys.min() + ys.max()) / 2 - 31.5) <= 1
