"""Trains the text-to-image U-Net in pixel space on an image-text dataset.

    1. the condition of every caption: the frozen CLIP text tower's unit vector (cached)
    2. each step: noise a batch of training images at random timesteps (cosine schedule), predict
       v (Salimans & Ho 2022); Min-SNR-5 weighting (Hang et al. 2023); the condition dropped 15% of the time
       so one model is both conditional and unconditional (classifier-free guidance)
    3. EMA weights (decay 0.999) are what gets evaluated, exported and served
    4. checkpoints that resume exactly; at the end: samples in a *new phrasing* of training
       concepts, ranked by our CLIP (top-5 hit rate), CLIP score against shuffled prompts, and a
       Frechet distance on our own image-tower features (not Inception FID), plus a sample grid
"""
from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import load_checkpoint, load_weights, save_checkpoint
from .data.image_text import ImageTextDataset, load_image_text
from .models.unet import UNetConfig, build_unet, make_scheduler
from .schedule import EMA, epoch_batch, finish_step, warmup_cosine
from .train_text import StepReport, pick_device


@dataclass
class DiffusionTrainConfig:
    data: str = ""
    clip: str = ""                       # the CLIP whose text tower conditions (config.json + model.safetensors)
    out: str = "runs/diffusion"
    image_size: int = 64
    patch: int = 2
    channels: tuple[int, ...] = (32, 64, 128, 128)
    attention: tuple[bool, ...] = ()     # cross-attention per level; () = the coarsest only
    layers_per_block: int = 1
    batch_size: int = 64
    max_steps: int = 4000
    lr: float = 1e-3
    warmup_steps: int = 200
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    cond_drop: float = 0.15
    min_snr: float = 5.0
    eval_interval: int = 500
    checkpoint_interval: int = 100
    eval_concepts: int = 200
    eval_steps: int = 25
    eval_guidance: float = 3.0
    eval_seed: int = 1337                # picks the evaluation's concepts: the same whatever the training seed
    seed: int = 1337
    threads: int = 2
    device: str = "auto"                 # auto: cuda where there is one (bf16 autocast there), else cpu
    resume: bool = True
    init: str = ""                       # start from these weights (a run or the starter) unless a checkpoint resumes

    def model_config(self) -> UNetConfig:
        return UNetConfig(image_size=self.image_size, patch=self.patch, channels=tuple(self.channels),
                          attention=tuple(self.attention), layers_per_block=self.layers_per_block)


def prepare_pixels(ds: ImageTextDataset, size: int) -> torch.Tensor:
    """Every image resized to size x size (antialiased), as float (N, 3, size, size) in [-1, 1]."""
    from omniforge_shared.images import to_model_input

    return torch.cat([torch.from_numpy(to_model_input(list(ds.images[i:i + 512]), size))
                      for i in range(0, len(ds.images), 512)])


def conditions(ds: ImageTextDataset, clip, cache: Path, *, log=print) -> dict:
    """Unit text embeddings of every caption (training), name and held-out phrasing (evaluation)."""
    from .train_clip import caption_features

    feats = caption_features(ds, cache, log=log)
    with torch.no_grad():
        proj = lambda x: F.normalize(clip.text_proj(x), dim=-1)
        return {"captions": proj(feats["captions"]), "caption_offsets": feats["caption_offsets"],
                "names": proj(feats["names"]), "heldout": proj(feats["heldout"])}


def check_init(mcfg: UNetConfig, source: Path) -> None:
    """Refuse, before any data is read, weights of another shape or a folder that holds none."""
    if not (source / "config.json").is_file() or not (source / "model.safetensors").is_file():
        raise ValueError(f"init={source}: expected a diffusion run or starter folder with config.json and "
                         "model.safetensors")
    theirs = UNetConfig.from_dict(json.loads((source / "config.json").read_text()))
    if theirs.to_dict() != mcfg.to_dict():
        differ = [k for k, v in mcfg.to_dict().items() if theirs.to_dict().get(k) != v]
        raise ValueError(f"init={source} is a U-Net of another shape ({', '.join(differ)} differ); "
                         "train with its --channels, --image-size and --patch")


def load_conditioning(data: Path, clip_dir: Path, cache: Path, *, log=print):
    """The image-text dataset, the CLIP whose text tower conditions, and the unit text embeddings
    (cached in `cache`): what both training and evaluation start from."""
    from .export_clip import load_clip

    ds = load_image_text(data, verify=True)
    clip = load_clip(clip_dir)
    if clip.text is not None:
        raise ValueError(f"{clip_dir} has our own text tower; the diffusion recipe conditions on a MiniLM-tower CLIP "
                         "(train one with text_tower=minilm, the default)")
    return ds, clip, conditions(ds, clip, cache, log=log)


def lr_at(step: int, cfg: DiffusionTrainConfig) -> float:
    return warmup_cosine(step, lr=cfg.lr, min_lr=1e-5, warmup=cfg.warmup_steps, total=cfg.max_steps)


@torch.no_grad()
def sample_torch(unet, scheduler, cond: torch.Tensor, *, steps: int, guidance: float, size: int,
                 generator: torch.Generator) -> torch.Tensor:
    """torch-eager DDIM with classifier-free guidance: cond (B, D) -> images (B, 3, size, size) in [-1, 1]."""
    scheduler.set_timesteps(steps)
    x = torch.randn(len(cond), 3, size, size, generator=generator)
    context = torch.cat([cond, torch.zeros_like(cond)])[:, None]         # (2B, 1, D): conditional, then not
    for t in scheduler.timesteps:
        eps = unet(torch.cat([x, x]), t.expand(2 * len(x)), context)
        eps_c, eps_u = eps.chunk(2)
        x = scheduler.step(eps_u + guidance * (eps_c - eps_u), t, x).prev_sample
    return x.clamp(-1, 1)


def train_diffusion(cfg: DiffusionTrainConfig, *, on_step: Callable[[StepReport], bool | None] | None = None,
                    log=print, progress: bool = True) -> dict:
    from safetensors.torch import save_file

    torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.init:
        check_init(cfg.model_config(), Path(cfg.init))
    ds, clip, cond = load_conditioning(Path(cfg.data), Path(cfg.clip), out / "text_features.pt", log=log)
    pixels = prepare_pixels(ds, cfg.image_size)
    train_idx = ds.train_items()
    if len(train_idx) < cfg.batch_size:
        raise ValueError(f"only {len(train_idx)} training images; batch_size={cfg.batch_size} needs more")
    mcfg = cfg.model_config()
    torch.manual_seed(cfg.seed)
    unet = build_unet(mcfg)
    ckpt = out / "checkpoints" / "last.pt"
    if cfg.init and not (cfg.resume and ckpt.exists()):
        # the shape was checked above, before any data was read
        load_weights(Path(cfg.init) / "model.safetensors", unet)
        log(f"starting from the weights in {cfg.init}")
    unet.to(device)
    scheduler = make_scheduler(mcfg, "ddpm")
    alphas = scheduler.alphas_cumprod
    snr = (alphas / (1 - alphas)).to(device)
    train_pixels = pixels.to(device)
    v_pred = mcfg.scheduler["prediction_type"] == "v_prediction"
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = EMA(unet, cfg.ema_decay)
    step, wall_before, history = 0, 0.0, []
    if cfg.resume and ckpt.exists():
        ck = load_checkpoint(ckpt)
        unet.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        ema.shadow = {k: v.to(device) for k, v in ck["ema"].items()}
        step, wall_before, history = ck["step"], ck["wall_s"], ck["history"]
        torch.set_rng_state(ck["torch_rng"])
        if device.type == "cuda" and ck.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ck["cuda_rng"], device)
        log(f"resumed at step {step}")
    offsets = cond["caption_offsets"]
    n_caps = offsets[1:] - offsets[:-1]
    concept_of = torch.from_numpy(ds.item_concept)

    def batch_at(s: int) -> np.ndarray:
        return epoch_batch(train_idx, step=s, batch_size=cfg.batch_size, seed=cfg.seed)

    def checkpoint(s: int, wall: float) -> None:
        save_checkpoint(ckpt, {"model": unet.state_dict(), "optimizer": opt.state_dict(), "ema": ema.shadow,
                               "step": s, "wall_s": wall, "history": history, "torch_rng": torch.get_rng_state(),
                               "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                               "config": asdict(cfg)})

    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.max_steps, initial=step, desc="diffusion", unit="step")
    t_start, loss_ema = time.time(), None
    unet.train()
    while step < cfg.max_steps:
        t0 = time.time()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        idx = batch_at(step)
        x0 = train_pixels[idx]
        concept = concept_of[idx]
        pick = offsets[concept] + (torch.rand(len(idx)) * n_caps[concept]).long()
        c = cond["captions"][pick]
        c = torch.where((torch.rand(len(idx)) < cfg.cond_drop)[:, None], torch.zeros_like(c), c).to(device)
        # 1. noise at random timesteps, 2. predict v (or the noise), 3. Min-SNR-weighted MSE
        noise = torch.randn_like(x0)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),)).to(device)
        xt = scheduler.add_noise(x0, noise, t)
        with autocast:
            pred = unet(xt, t, c[:, None]).float()
        if v_pred:      # Min-SNR-gamma for v: min(snr, gamma) / (snr + 1); for epsilon: / snr
            weight, target = torch.clamp(snr[t], max=cfg.min_snr) / (snr[t] + 1), scheduler.get_velocity(x0, noise, t)
        else:
            weight, target = torch.clamp(snr[t], max=cfg.min_snr) / snr[t], noise
        loss = (weight * F.mse_loss(pred, target, reduction="none").mean((1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.update(unet, step)
        step += 1
        loss_ema = loss.item() if loss_ema is None else 0.98 * loss_ema + 0.02 * loss.item()
        metrics = {}
        if cfg.eval_interval and step % cfg.eval_interval == 0 and step < cfg.max_steps:
            history.append({"step": step, "loss": loss_ema})
            log(f"step {step}: loss {loss_ema:.4f}")
        if not finish_step(step=step, total=cfg.max_steps, loss=loss.item(), shown_loss=loss_ema, lr=lr_at(step, cfg),
                           items=len(idx), started=t0, wall=wall_before + time.time() - t_start,
                           checkpoint_interval=cfg.checkpoint_interval, checkpoint=checkpoint, bar=bar,
                           on_step=on_step, metrics=metrics):
            break
    if bar is not None:
        bar.close()
    wall = wall_before + time.time() - t_start
    # the EMA weights are the model; it is measured and saved on the CPU, as it is served
    ema.copy_to(unet)
    unet.cpu().eval()
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(mcfg.to_dict(), indent=2))
    from .eval_diffusion import diffusion_suite

    quality = diffusion_suite(unet, make_scheduler(mcfg, "ddim"), ds, clip, cond, pixels, out_dir=out,
                              n_concepts=cfg.eval_concepts, steps=cfg.eval_steps, guidance=cfg.eval_guidance,
                              size=cfg.image_size, seed=cfg.eval_seed)
    summary = {"recipe": "diffusion", "steps": step, "max_steps": cfg.max_steps, "wall_s": round(wall, 1),
               "params": sum(p.numel() for p in unet.parameters()), "final_loss": loss_ema, "quality": quality,
               "history": history, "dataset": ds.manifest["name"], "dataset_hash": ds.manifest["content_hash"],
               "config": asdict(cfg)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
