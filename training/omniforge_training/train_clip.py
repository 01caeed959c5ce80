"""Trains the CLIP image tower (and both projections) on an image-text dataset.

    1. cache the frozen text tower's features of every caption (once per dataset)
    2. each step: a batch of training images (augmented with kornia) and one random training
       caption of each image's concept -> symmetric multi-positive InfoNCE
    3. every `eval_interval` steps: retrieval Recall@K on val and on the held-out style
    4. checkpoints (model, optimiser, step, every RNG) that resume to the same numbers

Writes `run/`: model.safetensors (fp32), config.json, summary.json, metrics.jsonl, and
checkpoints/last.pt.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import atomic_write, load_checkpoint, save_checkpoint, save_weights
from .data.image_text import ImageTextDataset, heldout_phrasing, load_image_text
from .eval_vision import retrieval_suite
from .models.clip import CLIP, CLIPConfig
from .models.text_encoder import TextEncoderConfig
from .models.vit import ViTConfig
from .schedule import EMA, epoch_batch, finish_step, warmup_cosine
from .train_text import StepReport

MEAN, STD = 0.5, 0.5     # omniforge_shared.images normalisation: (x / 255 - 0.5) / 0.5


@dataclass
class CLIPTrainConfig:
    data: str = ""
    out: str = "runs/clip"
    image_size: int = 64
    patch_size: int = 8
    n_layer: int = 6
    n_head: int = 4
    n_embd: int = 192
    drop_path: float = 0.1
    embed_dim: int = 256
    batch_size: int = 256
    max_steps: int = 3000
    lr: float = 2e-3
    min_lr: float = 1e-5
    warmup_steps: int = 150
    weight_decay: float = 0.05
    eval_interval: int = 250
    checkpoint_interval: int = 100
    seed: int = 1337
    threads: int = 2
    # augmentation: crops and small affine moves keep an emoji's meaning; colour shifts of hue and
    # mirror flips do not (a red heart is not a blue one, a left arrow is not a right one)
    crop_scale: tuple[float, float] = (0.55, 1.0)
    # zoom out as well as in (a crop only zooms in), and soften edges now and then: a user's picture
    # is not framed like ours, and a style is partly its line work
    affine_scale: tuple[float, float] = (0.8, 1.05)
    blur_p: float = 0.25
    # flatten the shading now and then: fewer colour levels (posterize) or a median filter that wipes
    # fine line work and gradients; styles differ in shading and outlines more than in shape
    flat_p: float = 0.2
    degrees: float = 12.0
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.25
    # besides in-batch InfoNCE, each image is also contrasted with the names of *every* training
    # concept (a negative set the size of the concept list, not of the batch): weight of that term
    name_bank_weight: float = 1.0
    # the text tower: the frozen pretrained MiniLM, or our own encoder over the text path's BPE
    text_tower: str = "minilm"
    tokenizer: str = ""                  # for text_tower="own": a BPE tokenizer.json (default: the starter's)
    text_layers: int = 2
    text_embd: int = 128
    # start from a trained CLIP (a run, starter or bundle folder of the same shape) instead of from
    # scratch: a longer or more robust run picks up where an earlier one stopped
    init: str = ""
    # keep the text side (projection, and our own text tower if any) fixed: the shared space does not
    # move, so the towers and models already aligned to it (audio tower, diffusion conditioning) stay valid
    lock_text: bool = False
    # an exponential moving average of the weights (0: off); when on, the average is what gets
    # evaluated, saved and exported, and the raw weights' retrieval is kept beside it in the summary
    ema_decay: float = 0.0
    resume: bool = True
    extra: dict = field(default_factory=dict)

    def model_config(self, vocab_size: int = 4096) -> CLIPConfig:
        text = None
        if self.text_tower == "own":
            text = TextEncoderConfig(vocab_size=vocab_size, n_layer=self.text_layers, n_embd=self.text_embd,
                                     n_head=max(1, self.text_embd // 32))
        return CLIPConfig(vision=ViTConfig(image_size=self.image_size, patch_size=self.patch_size,
                                           n_layer=self.n_layer, n_head=self.n_head, n_embd=self.n_embd,
                                           drop_path=self.drop_path),
                          embed_dim=self.embed_dim, text_tower=self.text_tower, text=text)


def caption_features(ds: ImageTextDataset, cache: Path, *, log=print, progress: bool = False) -> dict:
    """The frozen text tower's features of every caption, cached by the dataset's content hash."""
    from .models.minilm import encode_texts

    cache = Path(cache)
    if cache.exists():
        cached = torch.load(cache, weights_only=False)
        if cached.get("content_hash") == ds.manifest["content_hash"]:
            return cached
    names = [c["name"] for c in ds.concepts]
    train_caps, offsets = [], [0]
    for c in ds.concepts:
        train_caps += c["captions"]
        offsets.append(len(train_caps))
    heldout = [heldout_phrasing(c) for c in ds.concepts]
    t0 = time.time()
    feats = encode_texts(names + train_caps + heldout, progress=progress)
    n, m = len(names), len(train_caps)
    cached = {"content_hash": ds.manifest["content_hash"], "names": feats[:n], "captions": feats[n:n + m],
              "caption_offsets": torch.tensor(offsets), "heldout": feats[n + m:]}
    atomic_write(cache, lambda tmp: torch.save(cached, tmp))
    log(f"text tower: {len(feats)} caption features in {time.time() - t0:.0f} s")
    return cached


def caption_tokens(ds: ImageTextDataset, tokenizer_path: Path, max_tokens: int) -> tuple[dict, int]:
    """For our own text tower: every caption, name and held-out phrasing as padded BPE ids."""
    from omniforge_shared.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_path)

    def pad(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [tok.encode(t)[:max_tokens] or [0] for t in texts]
        ids = torch.zeros(len(rows), max_tokens, dtype=torch.long)
        mask = torch.zeros(len(rows), max_tokens, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
        return ids, mask

    caps, offsets = [], [0]
    for c in ds.concepts:
        caps += c["captions"]
        offsets.append(len(caps))
    heldout = [heldout_phrasing(c) for c in ds.concepts]
    out = {"caption_offsets": torch.tensor(offsets)}
    for key, texts in (("captions", caps), ("names", [c["name"] for c in ds.concepts]), ("heldout", heldout)):
        out[f"{key}_ids"], out[f"{key}_mask"] = pad(texts)
    return out, tok.vocab_size


def text_embeddings(model: CLIP, text: dict, key: str, index=slice(None)) -> torch.Tensor:
    """Unit text embeddings of text[key][index], through whichever text tower the model has."""
    if model.text is not None:
        return model.encode_text(text[f"{key}_ids"][index], text[f"{key}_mask"][index])
    return model.encode_text_features(text[key][index])


def make_augment(cfg: CLIPTrainConfig):
    import kornia.augmentation as K

    return K.AugmentationSequential(
        K.RandomResizedCrop((cfg.image_size, cfg.image_size), scale=cfg.crop_scale, ratio=(0.85, 1.18)),
        K.RandomAffine(degrees=cfg.degrees, translate=(0.06, 0.06), scale=cfg.affine_scale, padding_mode="border",
                       p=0.5),
        K.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, 0.0, p=0.6),
        K.RandomGaussianBlur((3, 3), (0.1, 1.0), p=cfg.blur_p),
        K.RandomPosterize(bits=(3.0, 5.0), p=cfg.flat_p),
        K.RandomMedianBlur((3, 3), p=cfg.flat_p),
    )


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


def lr_at(step: int, cfg: CLIPTrainConfig) -> float:
    return warmup_cosine(step, lr=cfg.lr, min_lr=cfg.min_lr, warmup=cfg.warmup_steps, total=cfg.max_steps)


@torch.no_grad()
def embed_images(model: CLIP, images: np.ndarray, idx: np.ndarray, *, batch: int = 256) -> np.ndarray:
    """Unit embeddings of images[idx], preprocessed exactly as the services do (omniforge_shared.images)."""
    from omniforge_shared.images import to_model_input

    model.eval()
    size = model.config.vision.image_size
    out = [model.encode_image(torch.from_numpy(to_model_input(list(images[idx[i:i + batch]]), size)))
           for i in range(0, len(idx), batch)]
    return torch.cat(out).numpy()


@torch.no_grad()
def evaluate(model: CLIP, ds: ImageTextDataset, text: dict, *, max_queries: int | None = None,
             splits=("val", "heldout_style", "unseen_concepts", "unseen_all_names")) -> dict:
    was = model.training
    model.eval()
    names = text_embeddings(model, text, "names").numpy()
    res = retrieval_suite(ds, lambda idx: embed_images(model, ds.images, idx), names, splits=splits,
                          max_queries=max_queries)
    model.train(was)
    return res


def space_of(source: Path) -> dict | None:
    """The shared space of a trained CLIP folder: a bundle's or starter's manifest says it
    (`Bundle.space`), a run's summary names it when the run kept another model's text side; None if
    unnamed."""
    from omniforge_shared.bundle import Bundle

    if (source / "manifest.json").exists():
        m = json.loads((source / "manifest.json").read_text())
        if m.get("name") and m.get("version"):
            return dict(zip(("name", "version"), Bundle(source, m).space))
    if (source / "summary.json").exists():
        return json.loads((source / "summary.json").read_text()).get("space")
    return None


def init_from(model: CLIP, source: Path) -> None:
    """Load a trained CLIP's weights into `model`; the two must have the same configuration."""
    from .export_clip import load_clip

    if not (source / "config.json").exists() or not (source / "model.safetensors").exists():
        raise ValueError(f"init={source}: expected a CLIP run, starter or bundle folder with config.json "
                         "and model.safetensors")
    trained = load_clip(source)
    if trained.config.to_dict() != model.config.to_dict():
        mine, theirs = model.config.to_dict(), trained.config.to_dict()
        differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise ValueError(f"init={source} was trained with a different shape ({', '.join(differ)} differ); "
                         "train with the same image_size, patch_size, n_layer, n_head, n_embd and embed_dim")
    model.load_state_dict(trained.state_dict())


def train_clip(cfg: CLIPTrainConfig, *, on_step: Callable[[StepReport], bool | None] | None = None,
               log=print, progress: bool = True) -> dict:
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_image_text(Path(cfg.data), verify=True)
    if ds.manifest["image_size"] < cfg.image_size:
        raise ValueError(f"the dataset's images are {ds.manifest['image_size']} px; image_size={cfg.image_size} "
                         "needs a dataset built at that size or larger")
    vocab = 4096
    if cfg.text_tower == "own":
        from .starter import STARTER_TEXT_DIR

        tokenizer = Path(cfg.tokenizer or STARTER_TEXT_DIR / "tokenizer.json")
        text, vocab = caption_tokens(ds, tokenizer, 32)
        (out / "tokenizer.json").write_bytes(tokenizer.read_bytes())      # the export bundles it
    else:
        text = caption_features(ds, out / "text_features.pt", log=log, progress=progress)
    train_idx = ds.train_items()
    if len(train_idx) < cfg.batch_size:
        raise ValueError(f"only {len(train_idx)} training images; batch_size={cfg.batch_size} needs more")
    torch.manual_seed(cfg.seed)
    mcfg = cfg.model_config(vocab)
    model = CLIP(mcfg)
    space = None                          # the shared space this model's vectors live in, when not its own
    if cfg.init:
        init_from(model, Path(cfg.init))
        log(f"initialised from {cfg.init}")
        if cfg.lock_text:
            space = space_of(Path(cfg.init))
    if cfg.lock_text:
        model.text_proj.requires_grad_(False)
        if model.text is not None:
            model.text.requires_grad_(False)
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in trained if p.ndim >= 2 and "pos" not in n]
    no_decay = [p for n, p in trained if p.ndim < 2 or "pos" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    augment = make_augment(cfg)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay else None
    step, wall_before, history = 0, 0.0, []
    ckpt_path = out / "checkpoints" / "last.pt"
    if cfg.resume and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step, wall_before, history = ck["step"], ck["wall_s"], ck["history"]
        torch.set_rng_state(ck["torch_rng"])
        if ema is not None:
            if "ema" not in ck:
                raise ValueError(f"{ckpt_path} was saved without a weight average; resume with ema_decay=0 "
                                 "or start a new run folder")
            ema.shadow = ck["ema"]
        log(f"resumed at step {step}")
    concept_of = torch.from_numpy(ds.item_concept)
    offsets = text["caption_offsets"]
    n_caps = offsets[1:] - offsets[:-1]
    # the name bank: every training concept's name, and where each concept sits in it
    bank_concepts = torch.from_numpy(np.unique(ds.item_concept[train_idx]))
    bank_position = torch.full((len(ds.concepts),), -1, dtype=torch.long)
    bank_position[bank_concepts] = torch.arange(len(bank_concepts))

    def batch_at(s: int) -> np.ndarray:
        return epoch_batch(train_idx, step=s, batch_size=cfg.batch_size, seed=cfg.seed)

    def checkpoint(s: int, wall: float) -> None:
        save_checkpoint(ckpt_path, {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": s,
                                    "wall_s": wall, "history": history, "torch_rng": torch.get_rng_state(),
                                    "config": asdict(cfg), **({"ema": ema.shadow} if ema is not None else {})})

    def averaged() -> CLIP:
        avg = copy.deepcopy(model)          # not CLIP(mcfg): a fresh init would draw from the seeded generator
        ema.copy_to(avg)
        return avg

    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.max_steps, initial=step, desc="clip", unit="step")
    t_start = time.time()
    model.train()
    loss_ema = None
    while step < cfg.max_steps:
        t0 = time.time()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        idx = batch_at(step)
        concept = concept_of[idx]
        # 1. one random training caption per image, from the cached text features
        pick = offsets[concept] + (torch.rand(len(idx)) * n_caps[concept]).long()
        txt = text_embeddings(model, text, "captions", pick)
        # 2. augmented, normalised pixels -> image embeddings
        with torch.no_grad():
            pix = (augment(to_pixels(ds.images[idx])) - MEAN) / STD
        img = model.encode_image(pix)
        loss, stats = model.loss(img, txt, concept)
        if cfg.name_bank_weight:
            bank = text_embeddings(model, text, "names", bank_concepts)             # (C, D)
            bank_loss = F.cross_entropy(model.scale() * img @ bank.t(), bank_position[concept])
            loss = loss + cfg.name_bank_weight * bank_loss
            stats["bank_loss"] = bank_loss.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in trained], 1.0)
        opt.step()
        if ema is not None:
            ema.update(model, step)
        step += 1
        loss_ema = loss.item() if loss_ema is None else 0.95 * loss_ema + 0.05 * loss.item()
        metrics = {}
        if (cfg.eval_interval and step % cfg.eval_interval == 0) or step == cfg.max_steps:
            res = evaluate(model, ds, text, max_queries=1000, splits=("val", "heldout_style"))
            metrics = {"val_i2t_R@1": res["val"]["i2t_R@1"], "val_i2t_R@5": res["val"]["i2t_R@5"],
                       "heldout_style_i2t_R@1": res.get("heldout_style", {}).get("i2t_R@1")}
            if ema is not None:
                res = evaluate(averaged(), ds, text, max_queries=1000, splits=("val", "heldout_style"))
                metrics.update({"ema_val_i2t_R@1": res["val"]["i2t_R@1"],
                                "ema_heldout_style_i2t_R@1": res.get("heldout_style", {}).get("i2t_R@1")})
            history.append({"step": step, "loss": loss_ema, **metrics})
            log(f"step {step}: loss {loss_ema:.3f} " + " ".join(f"{k} {v:.3f}" for k, v in metrics.items() if v is not None))
        if not finish_step(step=step, total=cfg.max_steps, loss=loss.item(), shown_loss=loss_ema, lr=lr_at(step, cfg),
                           items=len(idx), started=t0, wall=wall_before + time.time() - t_start,
                           checkpoint_interval=cfg.checkpoint_interval, checkpoint=checkpoint, bar=bar,
                           on_step=on_step, metrics={**metrics, **stats}):
            break
    if bar is not None:
        bar.close()
    wall = wall_before + time.time() - t_start
    raw = None
    if ema is not None:
        raw = evaluate(model, ds, text)
        model = averaged()
    final = evaluate(model, ds, text)
    save_weights(out / "model.safetensors", model)
    (out / "config.json").write_text(json.dumps(mcfg.to_dict(), indent=2))
    summary = {"recipe": "clip", "steps": step, "max_steps": cfg.max_steps, "wall_s": round(wall, 1),
               "images_seen": step * cfg.batch_size, "train_images": int(len(train_idx)),
               "params": sum(p.numel() for p in model.parameters()),
               "final_loss": loss_ema, "retrieval": final, "history": history,
               "temperature": 1.0 / model.scale().item(), "dataset": ds.manifest["name"],
               "dataset_hash": ds.manifest["content_hash"], "config": asdict(cfg)}
    if raw is not None:
        summary["retrieval_raw_weights"] = raw
    if space:
        summary["space"] = space
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
