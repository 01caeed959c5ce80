"""The starter image-text set: the same emoji concepts in four drawing styles, built offline.

Sources (all installed by `make image-data`, nothing downloaded at build time):
  noto      Noto Color Emoji, rendered with Pillow from Debian `fonts-noto-color-emoji` (OFL-1.1)
  twemoji   64 px PNGs from npm `emoji-datasource-twitter@16` (graphics CC-BY-4.0)
  openmoji  SVGs from npm `openmoji@17` (CC-BY-SA-4.0)
  fluent    flat and modern SVGs from npm `fluentui-emoji@1.3` (MIT)

Every image is cropped to its drawing, fitted into the same box and composited on the same
white background, so that neither the background nor the resolution tells the styles apart.
Captions come from the Unicode CLDR names, enriched with emoji short names and OpenMoji
annotations and tags into several phrasings; one phrasing is held back from training so
that evaluation can ask for a known concept in words the model never saw. Splits are by
concept (85/5/10), and one whole style is held out of training.
"""
from __future__ import annotations

import json
import os
import re
import time
import unicodedata
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .image_text import concept_split, write_dataset
from .ingest import DataError

NOTO_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
NPM_PACKAGES = {"twemoji": "emoji-datasource-twitter", "openmoji": "openmoji", "fluent": "fluentui-emoji"}
INSTALL_HINT = "run `make image-data` (apt fonts-noto-color-emoji, npm emoji-datasource-twitter@16 openmoji@17 fluentui-emoji@1.3)"
STYLES = ("noto", "twemoji", "openmoji", "fluent")
LICENSES = {
    "noto": {"source": "Debian fonts-noto-color-emoji (Noto Color Emoji)", "license": "OFL-1.1"},
    "twemoji": {"source": "npm emoji-datasource-twitter@16 (Twemoji)", "license": "CC-BY-4.0",
                "attribution": "Twemoji by Twitter, Inc and other contributors"},
    "openmoji": {"source": "npm openmoji@17", "license": "CC-BY-SA-4.0",
                 "attribution": "OpenMoji, the open-source emoji and icon project"},
    "fluent": {"source": "npm fluentui-emoji@1.3 (Microsoft Fluent Emoji)", "license": "MIT"},
}
STARTER_IMAGES = dict(size=64, box=56, seed=1337, heldout_style="twemoji")

TRAIN_TEMPLATES = ("{name}", "an emoji of {a_name}", "a picture of {a_name}", "{name} icon")
HELDOUT_TEMPLATES = ("a small drawing that shows {a_name}",)


def default_npm_root() -> Path:
    return Path(os.environ.get("OMNIFORGE_NPM_ROOT", Path.cwd() / "vendor" / "node_modules"))


def hex_key(hexcode: str) -> str:
    """'1F3C4-200D-2640-FE0F' -> '1f3c4-200d-2640': one key per emoji, variation selectors dropped."""
    return "-".join(p for p in hexcode.lower().split("-") if p != "fe0f")


def slug(name: str) -> str:
    name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", name.lower().replace("’", "").replace("'", "")).strip("-")


def phrase_name(cldr: str) -> str:
    """CLDR short names read as phrases: 'flag: Egypt' -> 'flag of Egypt', 'man: red hair' -> 'man, red hair'."""
    if cldr.startswith("flag: "):
        return "flag of " + cldr[len("flag: "):]
    return cldr.replace(": ", ", ")


def with_article(name: str) -> str:
    if re.match(r"^(a|an|the)\s", name, re.I) or name[:1].isdigit() or name[:1].isupper():
        return name
    return ("an " if name[:1].lower() in "aeiou" else "a ") + name


def concept_captions(name: str, short_names: list[str], tags: list[str]) -> tuple[list[str], list[str]]:
    a_name = with_article(name)
    train = [t.format(name=name, a_name=a_name) for t in TRAIN_TEMPLATES]
    for s in short_names:
        s = s.replace("_", " ").replace("-", " ")
        if s and s != name and s not in train:
            train.append(s)
    if tags:
        train.append(f"{name}, " + ", ".join(tags[:4]))
    heldout = [t.format(name=name, a_name=a_name) for t in HELDOUT_TEMPLATES]
    return list(dict.fromkeys(train)), heldout


# ---- rendering: each returns an RGBA Pillow image of the drawing --------------------------------

def _render_noto(text: str):
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(NOTO_FONT), 109, layout_engine=ImageFont.Layout.RAQM)
    canvas = Image.new("RGBA", (420, 180), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((10, 10), text, font=font, embedded_color=True)
    return canvas


def _render_svg(path: str):
    import io

    import cairosvg
    from PIL import Image

    return Image.open(io.BytesIO(cairosvg.svg2png(url=path, output_width=192, output_height=192))).convert("RGBA")


def _render_png(path: str):
    from PIL import Image

    return Image.open(path).convert("RGBA")


def fit_drawing(rgba, *, size: int, box: int) -> np.ndarray:
    """Crop to the drawing's opaque pixels, fit its long side into `box`, centre on white size x size."""
    from PIL import Image

    bbox = rgba.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
    if bbox is None:
        raise ValueError("the drawing is empty")
    rgba = rgba.crop(bbox)
    w, h = rgba.size
    scale = box / max(w, h)
    rgba = rgba.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)
    canvas = Image.new("RGBA", (size, size), (255, 255, 255, 255))
    canvas.alpha_composite(rgba, ((size - rgba.width) // 2, (size - rgba.height) // 2))
    return np.asarray(canvas.convert("RGB"), dtype=np.uint8)


def _render_task(task: tuple[str, str, int, int]):
    kind, arg, size, box = task
    try:
        rgba = {"noto": _render_noto, "svg": _render_svg, "png": _render_png}[kind](arg)
        return fit_drawing(rgba, size=size, box=box), None
    except Exception as e:  # noqa: BLE001 - one bad source file must not stop the build
        return None, f"{type(e).__name__}: {e}"


# ---- the build ---------------------------------------------------------------------------------

def _npm_package(root: Path, name: str) -> Path:
    p = Path(root) / name
    if not (p / "package.json").exists():
        raise DataError(f"npm package {name} not found under {root}; {INSTALL_HINT}, "
                        "or point OMNIFORGE_NPM_ROOT at its node_modules")
    return p


def collect_concepts(npm_root: Path) -> tuple[list[dict], dict]:
    """The concept list (from emoji.json) and, per style, where each concept's drawing lies."""
    twitter = _npm_package(npm_root, NPM_PACKAGES["twemoji"])
    openmoji = _npm_package(npm_root, NPM_PACKAGES["openmoji"])
    fluent = _npm_package(npm_root, NPM_PACKAGES["fluent"])
    if not NOTO_FONT.exists():
        raise DataError(f"{NOTO_FONT} not found; {INSTALL_HINT}")
    emoji = json.loads((twitter / "emoji.json").read_text(encoding="utf-8"))
    om = {hex_key(e["hexcode"]): e for e in json.loads((openmoji / "data" / "openmoji.json").read_text(encoding="utf-8"))}
    fluent_files = {}
    for variant in ("flat", "modern"):
        for f in sorted((fluent / "icons" / variant).glob("*.svg")):
            stem = f.stem[:-len("-default")] if f.stem.endswith("-default") else f.stem
            fluent_files.setdefault(stem, []).append(f)

    concepts, sources = [], {s: {} for s in STYLES}
    for e in sorted(emoji, key=lambda e: e["sort_order"]):
        if e["category"] == "Component" or e.get("obsoleted_by") or not e.get("has_img_twitter"):
            continue                      # skin-tone swatches, and emoji drawn the same as their successor
        key = hex_key(e["unified"])
        o = om.get(key)
        cldr = o["annotation"] if o else (unicodedata.name(chr(int(key, 16)), e["name"]).lower()
                                          if "-" not in key else e["name"].lower())
        name = phrase_name(cldr)
        tags = [t.strip() for t in ((o or {}).get("tags", "") + "," + (o or {}).get("openmoji_tags", "")).split(",")
                if t.strip() and t.strip() not in name]
        captions, heldout = concept_captions(name, e.get("short_names", []), list(dict.fromkeys(tags)))
        concepts.append({"id": key, "name": name, "cldr_name": cldr, "char": "".join(chr(int(c, 16)) for c in e["unified"].split("-")),
                         "category": e["category"], "captions": captions, "heldout_captions": heldout})
        sources["noto"][key] = [("noto", concepts[-1]["char"])]
        sources["twemoji"][key] = [("png", str(twitter / "img" / "twitter" / "64" / e["image"]))]
        if o and (openmoji / "color" / "svg" / f"{o['hexcode']}.svg").exists():
            sources["openmoji"][key] = [("svg", str(openmoji / "color" / "svg" / f"{o['hexcode']}.svg"))]
        if slug(cldr) in fluent_files:
            sources["fluent"][key] = [("svg", str(p)) for p in fluent_files[slug(cldr)]]
    return concepts, sources


def build_starter_images(out: Path, *, npm_root: Path | None = None, size: int = 64, box: int = 56,
                         seed: int = 1337, heldout_style: str = "twemoji", workers: int = 2,
                         limit: int | None = None, log=print, progress: bool = True) -> dict:
    if heldout_style not in STYLES:
        raise DataError(f"heldout_style {heldout_style!r} is not a style; choose one of {STYLES}")
    t0 = time.time()
    concepts, sources = collect_concepts(Path(npm_root or default_npm_root()))
    if limit:
        concepts = concepts[:limit]
    for c in concepts:
        c["split"] = concept_split(c["id"], seed=seed)
    tasks, meta = [], []
    for c in concepts:
        for style in STYLES:
            for kind, arg in sources[style].get(c["id"], []):
                tasks.append((kind, arg, size, box))
                meta.append({"concept": c["id"], "style": style,
                             "source": arg if kind == "noto" else Path(arg).name})
    log(f"rendering {len(tasks)} images of {len(concepts)} concepts in {len(STYLES)} styles")
    images, items, failed = [], [], []
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(_render_task, tasks, chunksize=32)
        if progress:
            from tqdm import tqdm
            results = tqdm(results, total=len(tasks), desc="render", unit="img")
        for m, (img, err) in zip(meta, results):
            if img is None:
                failed.append({**m, "error": err})
                continue
            items.append({"index": len(items), **m})
            images.append(img)
    # a concept with no image left is dropped; the data card lists every failure
    present = {it["concept"] for it in items}
    concepts = [c for c in concepts if c["id"] in present]
    per_style = {s: sum(1 for it in items if it["style"] == s) for s in STYLES}
    manifest = write_dataset(Path(out), images=np.stack(images), items=items, concepts=concepts, manifest={
        "name": "starter-images",
        "styles": list(STYLES),
        "heldout_style": heldout_style,
        "split": {"method": "sha256(seed:concept_id)", "by": "concept", "train": 0.85, "val": 0.05,
                  "test": 0.10, "seed": seed, "heldout_style": heldout_style},
        "preprocessing": {"size": size, "box": box, "background": "white", "crop": "opaque bbox"},
        "captions": {"train_templates": list(TRAIN_TEMPLATES), "heldout_templates": list(HELDOUT_TEMPLATES),
                     "from": "Unicode CLDR short names (OpenMoji annotations), emoji.json short names, OpenMoji tags"},
        "licenses": LICENSES,
        "sources": {s: {**LICENSES[s], "images": per_style[s]} for s in STYLES},
        "counts": {f"{s}_images": n for s, n in per_style.items()} | {"failed": len(failed)},
        "failed": failed[:50],
        "build_seconds": round(time.time() - t0, 1),
    })
    log(f"starter-images: {len(items)} images, {len(concepts)} concepts, {len(failed)} failed, "
        f"{manifest['build_seconds']} s")
    return manifest
