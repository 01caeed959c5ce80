"""Text-to-image quality, measured with our own aligned model (there is no Inception here):

  top5_concept_hit   generated from a training concept's *held-out phrasing*, does our CLIP rank
                     that concept among its 5 nearest names (of all concepts)? Beside it, the same
                     for the real training images of those concepts: the ceiling our CLIP allows
  clip_score         mean cosine(generated image, its prompt), beside the same with the prompts
                     shuffled: the gap is what the condition contributes
  frechet_distance   between our CLIP image tower's features of generated and of real images of
                     the same concepts: a Frechet distance on *our* features, not Inception FID
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr(sqrt(ca cb)) from the eigenvalues of sqrt(ca) cb sqrt(ca), which is symmetric
    w, v = np.linalg.eigh(ca)
    sqrt_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = sqrt_a @ cb @ sqrt_a
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * tr_sqrt)


@torch.no_grad()
def clip_features(clip, images_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Our CLIP's pooled image-tower features and unit embeddings of uint8 images."""
    from omniforge_shared.images import to_model_input

    x = torch.from_numpy(to_model_input(list(images_uint8), clip.config.vision.image_size))
    feats = clip.vision(x)
    return feats.numpy(), F.normalize(clip.image_proj(feats), dim=-1).numpy()


def sample_grid(images: np.ndarray, captions: list[str], path: Path, *, cols: int = 8, scale: int = 2) -> None:
    """A PNG of images with the prompt (or caption) written under each."""
    from PIL import Image, ImageDraw, ImageFont

    n = len(images)
    h, w = images.shape[1] * scale, images.shape[2] * scale
    cell_w, text_h = max(w, 110), 30
    rows = (n + cols - 1) // cols
    grid = Image.new("RGB", (cols * cell_w, rows * (h + text_h)), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for i, (img, cap) in enumerate(zip(images, captions)):
        r, c = divmod(i, cols)
        x, y = c * cell_w, r * (h + text_h)
        grid.paste(Image.fromarray(img).resize((w, h), Image.NEAREST), (x + (cell_w - w) // 2, y))
        words, lines = cap.split(), [""]
        for word in words:                                    # wrap at the cell's width
            if draw.textlength(f"{lines[-1]} {word}".strip(), font=font) > cell_w - 4 and lines[-1]:
                lines.append(word)
            else:
                lines[-1] = f"{lines[-1]} {word}".strip()
        draw.multiline_text((x + 2, y + h + 1), "\n".join(lines[:2]), fill="black", font=font, spacing=1)
    grid.save(path)


@torch.no_grad()
def diffusion_suite(unet, ddim, ds, clip, cond: dict, pixels: torch.Tensor, *, out_dir: Path, n_concepts: int = 200,
                    steps: int = 25, guidance: float = 3.0, size: int = 32, seed: int = 0, batch: int = 50) -> dict:
    from .data.image_text import heldout_phrasing
    from .train_diffusion import sample_torch

    rng = np.random.default_rng(seed)
    train_concepts = np.unique(ds.item_concept[ds.train_items()])
    picked = np.sort(rng.choice(train_concepts, min(n_concepts, len(train_concepts)), replace=False))
    prompts = cond["heldout"][picked]
    gen = torch.Generator().manual_seed(seed)
    images = np.concatenate([to_uint8(sample_torch(unet, ddim, prompts[i:i + batch], steps=steps, guidance=guidance,
                                                   size=size, generator=gen))
                             for i in range(0, len(picked), batch)])
    feats, emb = clip_features(clip, images)
    names = cond["names"].numpy()
    rank = np.argsort(-(emb @ names.T), axis=1)[:, :5]
    top5 = float(np.mean([p in r for p, r in zip(picked, rank)]))
    p = prompts.numpy()
    clip_score = float(np.mean(np.sum(emb * p, 1)))
    shuffled = float(np.mean(np.sum(emb * np.roll(p, 1, axis=0), 1)))
    # real images of the same concepts, in the training styles
    real_idx = [i for i in ds.train_items() if ds.item_concept[i] in set(picked.tolist())]
    real = to_uint8(pixels[real_idx])
    real_feats, real_emb = clip_features(clip, real)
    fd = frechet_distance(feats, real_feats)
    # the same ranking of the real images: the most a perfect copy of the training images could score
    real_rank = np.argsort(-(real_emb @ names.T), axis=1)[:, :5]
    real_top5 = float(np.mean([ds.item_concept[i] in r for i, r in zip(real_idx, real_rank)]))
    caps = [heldout_phrasing(ds.concepts[c]) for c in picked]
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    sample_grid(images[:32], caps[:32], Path(out_dir) / "samples.png")
    return {"top5_concept_hit": top5, "real_images_top5_concept_hit": real_top5, "clip_score": clip_score,
            "clip_score_shuffled_prompts": shuffled,
            "frechet_distance_own_features": fd, "frechet_note": "on our CLIP image-tower features, not Inception",
            "concepts": int(len(picked)), "steps": steps, "guidance": guidance, "real_images": len(real_idx)}


def evaluate_diffusion(model_dir: Path, clip_dir: Path, data_dir: Path, out_dir: Path, *, n_concepts: int = 200,
                       steps: int = 25, guidance: float = 3.0, seed: int = 1337, threads: int = 2, log=print) -> dict:
    """The recipe's end-of-training suite on a trained U-Net (a run or the starter), ranked by `clip_dir`.
    The default seed picks the concepts the recipe's own evaluation picks."""
    from .export_diffusion import load_unet
    from .models.unet import make_scheduler
    from .train_diffusion import load_conditioning, prepare_pixels

    torch.set_num_threads(threads)
    for need in (model_dir / "config.json", model_dir / "model.safetensors"):
        if not need.is_file():
            raise FileNotFoundError(f"{model_dir} is not a diffusion run or starter folder: {need.name} is missing")
    out_dir.mkdir(parents=True, exist_ok=True)
    ds, clip, cond = load_conditioning(data_dir, clip_dir, out_dir / "text_features.pt", log=log)
    unet, mcfg = load_unet(model_dir)
    pixels = prepare_pixels(ds, mcfg.image_size)
    quality = diffusion_suite(unet, make_scheduler(mcfg, "ddim"), ds, clip, cond, pixels, out_dir=out_dir,
                              n_concepts=n_concepts, steps=steps, guidance=guidance, size=mcfg.image_size, seed=seed)
    quality["model"] = str(model_dir)
    (out_dir / "quality.json").write_text(json.dumps(quality, indent=2))
    return quality
