"""Trains the captioner on an image-text dataset, on top of a trained CLIP image tower (frozen).

    1. run the frozen CLIP ViT once over every image: pooled tokens + embedding (cached)
    2. each step: a batch of training images; for most, a caption of the concept as target; for
       some, the prompt "describe the colours" and the colours measured on the image's pixels
    3. every `eval_interval` steps: val loss and caption diversity (prefix captioners collapse
       to one caption for every image: watch distinct / total)
    4. checkpoints that resume exactly; at the end: BLEU-4, CIDEr-D, exact match and
       self-retrieval on the test concepts and on the held-out style
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from omniforge_shared.bundle import sha256_file
from omniforge_shared.tokenizer import load_tokenizer

from .checkpoint import atomic_write, load_checkpoint, save_checkpoint, save_weights
from .data.image_text import ImageTextDataset, load_image_text
from .models.captioner import Captioner, CaptionerConfig
from .models.gpt import GPTConfig
from .schedule import epoch_batch, finish_step, warmup_cosine
from .train_text import StepReport

COLOUR_PROMPT = "describe the colours"
CAPTION_TEMPLATES = 4        # the first captions of a concept: its name and three plain phrasings


@dataclass
class CaptionTrainConfig:
    data: str = ""
    clip: str = ""                      # a trained CLIP run or starter folder (config.json + model.safetensors)
    tokenizer: str = ""                 # the text path's BPE tokenizer.json
    out: str = "runs/caption"
    n_layer: int = 3
    n_head: int = 4
    n_embd: int = 256
    block_size: int = 64
    batch_size: int = 128
    max_steps: int = 1500
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_steps: int = 100
    weight_decay: float = 0.05
    colour_prompt_share: float = 0.2
    max_caption_tokens: int = 24
    eval_interval: int = 250
    checkpoint_interval: int = 100
    seed: int = 1337
    threads: int = 2
    resume: bool = True


# ---- colours measured on pixels: the targets of the "describe the colours" prompt ------------------

def colour_words(image: np.ndarray, *, top: int = 2, min_share: float = 0.12) -> str:
    """uint8 (H, W, 3) on white -> 'yellow and brown': the main named colours of the drawing."""
    px = image.reshape(-1, 3).astype(np.float32) / 255.0
    px = px[~(px > 0.93).all(1)]                                      # the white background is not a colour
    if len(px) == 0:
        return "white"
    mx, mn = px.max(1), px.min(1)
    v, s = mx, np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0)
    r, g, b = px.T
    d = np.maximum(mx - mn, 1e-6)
    h = np.select([mx == r, mx == g], [((g - b) / d) % 6, (b - r) / d + 2], (r - g) / d + 4) * 60.0
    names = np.full(len(px), "grey", dtype=object)
    chroma = (s >= 0.2) & (v >= 0.2)
    bins = [(15, "red"), (40, "orange"), (70, "yellow"), (170, "green"), (260, "blue"), (295, "purple"),
            (345, "pink"), (361, "red")]
    lo = 0
    for hi, name in bins:
        names[chroma & (h >= lo) & (h < hi)] = name
        lo = hi
    names[chroma & np.isin(names, ["orange", "red"]) & (v < 0.55)] = "brown"
    names[v < 0.2] = "black"
    names[~chroma & (v >= 0.2) & (v > 0.85)] = "white"
    words, counts = np.unique(names, return_counts=True)
    order = np.argsort(-counts)
    picked = [str(words[i]) for i in order[:top] if counts[i] / len(px) >= min_share] or [str(words[order[0]])]
    return " and ".join(picked)


# ---- frozen image features ------------------------------------------------------------------------

@torch.no_grad()
def image_features(clip, images: np.ndarray, cfg: CaptionerConfig, *, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled ViT tokens (N, P-1, Cv) and CLIP embeddings (N, D) of every image (eval mode)."""
    from omniforge_shared.images import to_model_input

    from .models.captioner import PrefixMapper

    clip.eval()
    pool = PrefixMapper(cfg).pool_tokens
    size = cfg.vision.image_size
    toks, embs = [], []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(to_model_input(list(images[i:i + batch]), size))
        t = clip.vision.forward_tokens(x)
        toks.append(pool(t))
        embs.append(torch.nn.functional.normalize(clip.image_proj(t.mean(1)), dim=-1))
    return torch.cat(toks), torch.cat(embs)


@dataclass
class Targets:
    """Tokenised training targets: per concept its captions, per image its colour phrase."""
    captions: list[list[list[int]]]     # concept -> its caption token lists
    colours: list[list[int]]            # image -> colour phrase tokens
    prompt: list[int]
    eos: int


def build_targets(ds: ImageTextDataset, tok, cfg: CaptionTrainConfig) -> Targets:
    caps = [[tok.encode(c)[:cfg.max_caption_tokens] for c in concept["captions"][:CAPTION_TEMPLATES]]
            for concept in ds.concepts]
    colours = [tok.encode(colour_words(np.asarray(img))) for img in ds.images]
    return Targets(captions=caps, colours=colours, prompt=tok.encode(COLOUR_PROMPT), eos=tok.eos_id)


def make_batch(idx: np.ndarray, ds: ImageTextDataset, targets: Targets, gen: torch.Generator,
               colour_share: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, target_mask), right-padded with EOS."""
    rows, masks = [], []
    for i in idx:
        if torch.rand(1, generator=gen).item() < colour_share:
            prompt, caption = targets.prompt, targets.colours[i]
        else:
            options = targets.captions[ds.item_concept[i]]
            prompt, caption = [], options[int(torch.randint(len(options), (1,), generator=gen))]
        row = prompt + caption + [targets.eos]
        rows.append(row)
        masks.append([0] * len(prompt) + [1] * (len(caption) + 1))
    T = max(map(len, rows))
    ids = torch.full((len(rows), T), targets.eos, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.bool)
    for k, (row, m) in enumerate(zip(rows, masks)):
        ids[k, :len(row)] = torch.tensor(row)
        mask[k, :len(m)] = torch.tensor(m, dtype=torch.bool)
    return ids, mask


@torch.no_grad()
def greedy_captions(model: Captioner, prefix: torch.Tensor, *, eos: int, max_tokens: int = 24,
                    prompt: list[int] | None = None) -> list[list[int]]:
    """Greedy decoding in torch (evaluation only; the service decodes with the ONNX graph)."""
    model.eval()
    wte = model.decoder.transformer.wte
    x = prefix
    if prompt:
        x = torch.cat([x, wte(torch.tensor(prompt))[None].expand(len(prefix), -1, -1)], dim=1)
    out = [[] for _ in range(len(prefix))]
    done = torch.zeros(len(prefix), dtype=torch.bool)
    for step in range(max_tokens):
        logits, _, _ = model.decoder(inputs_embeds=x)
        if step == 0:                       # a caption says something: no end before the first token
            logits[:, -1, eos] = float("-inf")
        nxt = logits[:, -1].argmax(-1)
        for k, t in enumerate(nxt.tolist()):
            if not done[k]:
                if t == eos:
                    done[k] = True
                else:
                    out[k].append(t)
        if done.all():
            break
        x = torch.cat([x, wte(nxt)[:, None]], dim=1)
    return out


def lr_at(step: int, cfg: CaptionTrainConfig) -> float:
    return warmup_cosine(step, lr=cfg.lr, min_lr=cfg.min_lr, warmup=cfg.warmup_steps, total=cfg.max_steps)


def train_caption(cfg: CaptionTrainConfig, *, on_step: Callable[[StepReport], bool | None] | None = None,
                  log=print, progress: bool = True) -> dict:
    from .export_clip import load_clip

    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_image_text(Path(cfg.data), verify=True)
    tok = load_tokenizer(Path(cfg.tokenizer))
    if tok.eos_id is None:
        raise ValueError(f"{cfg.tokenizer} has no end-of-text token; use the text path's BPE tokenizer")
    clip = load_clip(Path(cfg.clip))
    mcfg = CaptionerConfig(vision=clip.config.vision, embed_dim=clip.config.embed_dim,
                           decoder=GPTConfig(vocab_size=tok.vocab_size, block_size=cfg.block_size,
                                             n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd))
    if mcfg.n_prefix + len(tok.encode(COLOUR_PROMPT)) + cfg.max_caption_tokens + 1 > cfg.block_size:
        raise ValueError(f"block_size={cfg.block_size} cannot hold {mcfg.n_prefix} prefix tokens, the prompt and "
                         f"{cfg.max_caption_tokens} caption tokens; raise block_size or lower max_caption_tokens")
    # 1. frozen features, cached by dataset and CLIP weights
    cache = out / "image_features.pt"
    key = {"dataset": ds.manifest["content_hash"], "clip": sha256_file(Path(cfg.clip) / "model.safetensors")}
    cached = torch.load(cache, weights_only=False) if cache.exists() else None
    if cached is None or cached["key"] != key:
        t0 = time.time()
        tokens, embs = image_features(clip, ds.images, mcfg)
        cached = {"key": key, "tokens": tokens, "embs": embs}
        atomic_write(cache, lambda tmp: torch.save(cached, tmp))
        log(f"image features of {len(embs)} images in {time.time() - t0:.0f} s")
    tokens, embs = cached["tokens"], cached["embs"]
    targets = build_targets(ds, tok, cfg)
    train_idx = ds.train_items()
    val_idx = ds.items("val", exclude_style=ds.heldout_style)
    if len(train_idx) < cfg.batch_size:
        raise ValueError(f"only {len(train_idx)} training images; batch_size={cfg.batch_size} needs more")

    torch.manual_seed(cfg.seed)
    model = Captioner(mcfg)
    opt = model.decoder.configure_optimizer(lr=cfg.lr, weight_decay=cfg.weight_decay)
    opt.add_param_group({"params": list(model.mapper.parameters()), "weight_decay": 0.0})
    gen = torch.Generator().manual_seed(cfg.seed)
    step, wall_before, history = 0, 0.0, []
    ckpt_path = out / "checkpoints" / "last.pt"
    if cfg.resume and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step, wall_before, history = ck["step"], ck["wall_s"], ck["history"]
        gen.set_state(ck["gen"])
        torch.set_rng_state(ck["torch_rng"])
        log(f"resumed at step {step}")

    def batch_at(s: int) -> np.ndarray:
        return epoch_batch(train_idx, step=s, batch_size=cfg.batch_size, seed=cfg.seed)

    def prefix_of(idx) -> torch.Tensor:
        return model.mapper(tokens[idx], embs[idx])

    def checkpoint(s: int, wall: float) -> None:
        save_checkpoint(ckpt_path, {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": s,
                                    "wall_s": wall, "history": history, "gen": gen.get_state(),
                                    "torch_rng": torch.get_rng_state(), "config": asdict(cfg)})

    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.max_steps, initial=step, desc="caption", unit="step")
    t_start, loss_ema = time.time(), None
    model.train()
    while step < cfg.max_steps:
        t0 = time.time()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        idx = batch_at(step)
        ids, mask = make_batch(idx, ds, targets, gen, cfg.colour_prompt_share)
        loss = model.loss(prefix_of(torch.from_numpy(idx)), ids, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        loss_ema = loss.item() if loss_ema is None else 0.95 * loss_ema + 0.05 * loss.item()
        metrics = {}
        if (cfg.eval_interval and step % cfg.eval_interval == 0) or step == cfg.max_steps:
            metrics = _watch(model, ds, targets, tok, val_idx, prefix_of, cfg)
            history.append({"step": step, "loss": loss_ema, **metrics})
            model.train()
            log(f"step {step}: loss {loss_ema:.3f} " + " ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        if not finish_step(step=step, total=cfg.max_steps, loss=loss.item(), shown_loss=loss_ema, lr=lr_at(step, cfg),
                           items=len(idx), started=t0, wall=wall_before + time.time() - t_start,
                           checkpoint_interval=cfg.checkpoint_interval, checkpoint=checkpoint, bar=bar,
                           on_step=on_step, metrics=metrics):
            break
    if bar is not None:
        bar.close()
    wall = wall_before + time.time() - t_start
    save_weights(out / "model.safetensors", model)
    (out / "config.json").write_text(json.dumps({"model": mcfg.to_dict(), "train": asdict(cfg)}, indent=2))
    tok.save(out / "tokenizer.json")
    from .eval_caption import caption_suite

    quality = caption_suite(model, ds, tok, prefix_of, clip=clip, eos=tok.eos_id, max_tokens=cfg.max_caption_tokens,
                            grid=out / "samples.png")
    summary = {"recipe": "caption", "steps": step, "max_steps": cfg.max_steps, "wall_s": round(wall, 1),
               "params": sum(p.numel() for p in model.parameters()), "final_loss": loss_ema,
               "quality": quality, "history": history, "dataset": ds.manifest["name"],
               "dataset_hash": ds.manifest["content_hash"], "config": asdict(cfg)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


@torch.no_grad()
def _watch(model, ds, targets, tok, val_idx, prefix_of, cfg) -> dict:
    """Val loss and caption diversity on (up to) 256 validation images."""
    model.eval()
    idx = val_idx[:256]
    if len(idx) == 0:
        return {}
    gen = torch.Generator().manual_seed(0)
    ids, mask = make_batch(idx, ds, targets, gen, 0.0)
    loss = model.loss(prefix_of(torch.from_numpy(idx)), ids, mask).item()
    caps = greedy_captions(model, prefix_of(torch.from_numpy(idx)), eos=tok.eos_id, max_tokens=cfg.max_caption_tokens)
    distinct = len({tuple(c) for c in caps}) / len(caps)
    return {"val_loss": loss, "val_caption_distinct": distinct}
