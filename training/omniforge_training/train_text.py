"""Trains a GPT text model on a text file or a token dataset.

    omniforge train text --data train.txt --val-data val.txt --tokenizer char --out runs/x

Checkpoints (model, optimizer, schedule position, every RNG and the data sampler's state)
are written atomically every `checkpoint_interval` steps; running the same command again
resumes exactly where the last checkpoint left off.
"""
from __future__ import annotations

import json
import math
import os
import platform
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from omniforge_shared.tokenizer import load_tokenizer, train_tokenizer

from .checkpoint import load_checkpoint, save_checkpoint, save_weights
from .data.dataset import load_dataset_manifest, open_tokens
from .data.ingest import DataError
from .models.gpt import GPT, GPTConfig


@dataclass
class TrainConfig:
    data: str = ""
    val_data: str | None = None
    out: str = "runs/text"
    # tokenizer (used when `data` is a raw text file)
    tokenizer: str = "char"
    vocab_size: int = 4096
    # model
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0
    bias: bool = True
    # optimisation
    batch_size: int = 12
    grad_accum: int = 1
    max_iters: int = 2000
    lr: float = 1e-3
    min_lr: float | None = None          # default lr / 10
    warmup_iters: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    # bookkeeping
    eval_interval: int = 250
    eval_iters: int = 20
    checkpoint_interval: int = 250
    sample_tokens: int = 120
    seed: int = 1337
    device: str = "auto"
    threads: int = 0                     # 0 = all cores
    val_fraction: float = 0.1            # when no val data is given: the last part of the data
    resume: bool = True

    def __post_init__(self) -> None:
        checks = {
            "batch_size": self.batch_size >= 1, "grad_accum": self.grad_accum >= 1,
            "max_iters": self.max_iters >= 1, "lr": self.lr > 0,
            "warmup_iters": self.warmup_iters >= 0, "grad_clip": self.grad_clip >= 0,
            "eval_interval": self.eval_interval >= 0, "checkpoint_interval": self.checkpoint_interval >= 0,
            "val_fraction": 0 < self.val_fraction < 1, "weight_decay": self.weight_decay >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"out of range: {', '.join(f'{k}={getattr(self, k)}' for k in bad)}")
        if self.tokenizer not in ("char", "bpe"):
            raise ValueError(f"tokenizer={self.tokenizer!r}; use 'char' or 'bpe'")
        if self.min_lr is None:
            self.min_lr = self.lr / 10

    @classmethod
    def from_file(cls, path: Path, **overrides) -> "TrainConfig":
        """Reads a JSON or TOML config; keyword overrides (e.g. from flags) win."""
        path = Path(path)
        if path.suffix == ".toml":
            import tomllib
            values = tomllib.loads(path.read_text())
        else:
            values = json.loads(path.read_text())
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"{path}: unknown settings {sorted(unknown)}; known: {sorted(known)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


class TokenStream:
    """Train and val token arrays plus the tokenizer, from a raw text file or a token dataset."""

    def __init__(self, cfg: TrainConfig, out: Path) -> None:
        src = Path(cfg.data)
        if not cfg.data or not src.exists():
            raise DataError(f"--data {cfg.data!r} does not exist; give a text file or a dataset folder")
        self.provenance: dict = {}
        if src.is_dir():
            manifest = load_dataset_manifest(src)
            self.tokenizer = load_tokenizer(src / "tokenizer.json")
            self.train = open_tokens(src / "train.bin", manifest["dtype"])
            self.val = open_tokens(src / "val.bin", manifest["dtype"])
            self.provenance = {"dataset": manifest["name"], "content_hash": manifest["content_hash"],
                               "counts": manifest["counts"], "sources": manifest["sources"]}
        else:
            from omniforge_shared.bundle import sha256_file

            text = _read_text(src)
            val_text = _read_text(Path(cfg.val_data)) if cfg.val_data else None
            tok_path = out / "tokenizer.json"
            if tok_path.exists():   # resuming: keep the tokenizer the checkpoint was trained with
                self.tokenizer = load_tokenizer(tok_path)
            else:
                corpus = [text, val_text] if (val_text and cfg.tokenizer == "char") else [text]
                self.tokenizer = train_tokenizer(cfg.tokenizer, corpus, vocab_size=cfg.vocab_size)
            ids = np.array(self.tokenizer.encode(text), dtype=np.int64)
            if val_text is not None:
                self.train, self.val = ids, np.array(self.tokenizer.encode(val_text), dtype=np.int64)
            else:
                cut = int(len(ids) * (1 - cfg.val_fraction))
                self.train, self.val = ids[:cut], ids[cut:]
            self.provenance = {"files": [{"path": p.name, "sha256": sha256_file(p)}
                                         for p in [src] + ([Path(cfg.val_data)] if cfg.val_data else [])]}
        if len(self.train) <= cfg.block_size + 1 or len(self.val) < 2:
            raise DataError(f"not enough tokens ({len(self.train)} train, {len(self.val)} val) "
                            f"for block_size {cfg.block_size}")

    def batch(self, split: str, batch_size: int, block_size: int, gen: torch.Generator, *, rank: int = 0,
              world: int = 1):
        """Draws the global batch (batch_size x world rows) and returns this rank's slice, so any
        number of processes sees the same global batch as one process would."""
        data = self.train if split == "train" else self.val
        block_size = min(block_size, len(data) - 1)
        starts = torch.randint(len(data) - block_size, (batch_size * world,), generator=gen).numpy()
        starts = starts[rank * batch_size:(rank + 1) * batch_size]
        rows = np.stack([np.asarray(data[s:s + block_size + 1], dtype=np.int64) for s in starts])
        t = torch.from_numpy(rows)
        return t[:, :-1], t[:, 1:]


def _read_text(path: Path) -> str:
    if not path.exists():
        raise DataError(f"{path} does not exist")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not valid UTF-8; re-encode it") from e


def lr_at(it: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to min_lr at max_iters."""
    if it < cfg.warmup_iters:
        return cfg.lr * (it + 1) / (cfg.warmup_iters + 1)
    progress = (it - cfg.warmup_iters) / max(1, cfg.max_iters - cfg.warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return cfg.min_lr + coeff * (cfg.lr - cfg.min_lr)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def full_loss(model: GPT, tokens, block_size: int, device, *, batch: int = 64) -> float:
    """Mean next-token loss over every token of `tokens`, in non-overlapping windows."""
    model.eval()
    tokens = np.asarray(tokens, dtype=np.int64)
    n = len(tokens) - 1
    total, count = 0.0, 0
    starts = list(range(0, n, block_size))
    for i in range(0, len(starts), batch):
        group = starts[i:i + batch]
        # the last window may be short: evaluate same-length windows together
        by_len: dict[int, list[int]] = {}
        for s in group:
            by_len.setdefault(min(block_size, n - s), []).append(s)
        for length, ss in by_len.items():
            x = torch.from_numpy(np.stack([tokens[s:s + length] for s in ss])).to(device)
            y = torch.from_numpy(np.stack([tokens[s + 1:s + length + 1] for s in ss])).to(device)
            logits, _, _ = model(x)
            loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)),
                                                     y.reshape(-1), reduction="sum")
            total += loss.item()
            count += y.numel()
    model.train()
    return total / count


@torch.no_grad()
def sample(model: GPT, tokenizer, prompt: str, *, max_new_tokens: int, device, temperature: float = 0.8,
           top_k: int = 40, seed: int = 0) -> str:
    model.eval()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    ids = tokenizer.encode(prompt) or [0]
    x = torch.tensor([ids], device=device)
    for _ in range(max_new_tokens):
        logits, _, _ = model(x[:, -model.config.block_size:])
        logits = logits[0, -1].float().cpu() / temperature
        v, _ = torch.topk(logits, min(top_k, logits.numel()))
        logits[logits < v[-1]] = -float("inf")
        nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)
        x = torch.cat([x, nxt.to(device).view(1, 1)], dim=1)
    model.train()
    return tokenizer.decode(x[0, len(ids):].tolist())


@dataclass
class StepReport:
    """What a training step tells its observer (progress bar, job runner)."""
    step: int
    max_iters: int
    loss: float
    lr: float
    tokens_per_s: float
    eta_s: float
    metrics: dict = field(default_factory=dict)


def train_text(cfg: TrainConfig, *, on_step: Callable[[StepReport], bool | None] | None = None,
               progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Trains and writes model.safetensors, config.json, tokenizer.json and summary.json to cfg.out.

    `on_step` is called after every step; returning False stops training after a checkpoint.
    """
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dist = Distributed.from_env(cfg.device)
    device = dist.device if dist.enabled else pick_device(cfg.device)
    if not dist.is_main:
        progress, on_step, log = False, None, (lambda message: None)
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()

    # 1. data and tokenizer
    data = TokenStream(cfg, out)
    data.tokenizer.save(out / "tokenizer.json")

    # 2. model and optimizer, fresh or from the last checkpoint
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    gconf = GPTConfig(vocab_size=data.tokenizer.vocab_size, block_size=cfg.block_size,
                      n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                      dropout=cfg.dropout, bias=cfg.bias)
    raw_model = model = GPT(gconf).to(device)
    optimizer = model.configure_optimizer(lr=cfg.lr, weight_decay=cfg.weight_decay,
                                          betas=(cfg.beta1, cfg.beta2))
    start_iter, tokens_seen, wall_before, history = 0, 0, 0.0, []
    ckpt_path = out / "ckpt.pt"
    if cfg.resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        if ckpt["model_config"] != gconf.to_dict():
            raise ValueError(f"{ckpt_path} was trained with {ckpt['model_config']}, not {gconf.to_dict()}; "
                             "use another --out or --no-resume")
        raw_model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_iter, tokens_seen = ckpt["iter"], ckpt["tokens_seen"]
        wall_before, history = ckpt["wall_s"], ckpt["history"]
        gen.set_state(ckpt["rng"]["data"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        np.random.set_state(ckpt["rng"]["numpy"])
        random.setstate(ckpt["rng"]["python"])
        log(f"resuming from step {start_iter} ({ckpt_path})")
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(raw_model, device_ids=[device.index] if device.type == "cuda" else None)
    n_params = raw_model.num_params()
    log(f"model: {n_params / 1e6:.2f}M parameters, {gconf.to_dict()}; device {device}, "
        f"threads {torch.get_num_threads()}, {'bf16 autocast' if use_bf16 else 'fp32'}"
        + (f", {dist.world} processes ({dist.backend})" if dist.enabled else ""))

    def checkpoint(it: int, wall: float) -> None:
        if not dist.is_main:
            return
        save_checkpoint(ckpt_path, {
            "iter": it, "tokens_seen": tokens_seen, "wall_s": wall, "history": history,
            "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
            "model_config": gconf.to_dict(), "train_config": asdict(cfg),
            "rng": {"data": gen.get_state(), "torch": torch.get_rng_state(),
                    "numpy": np.random.get_state(), "python": random.getstate()},
        })

    # 3. the loop
    tokens_per_step = cfg.batch_size * cfg.grad_accum * cfg.block_size * dist.world
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.max_iters, initial=start_iter, unit="step", dynamic_ncols=True)
    t_start = time.time()
    train_loss_ema = None
    it = start_iter
    stopped = False
    model.train()
    while it < cfg.max_iters:
        lr = lr_at(it, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum = 0.0
        for micro in range(cfg.grad_accum):
            x, y = data.batch("train", cfg.batch_size, cfg.block_size, gen, rank=dist.rank, world=dist.world)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            # DDP: all-reduce gradients on the last micro-step only
            sync = nullcontext() if not dist.enabled or micro == cfg.grad_accum - 1 else model.no_sync()
            with sync, autocast:
                _, loss, _ = model(x, y)
            (loss / cfg.grad_accum).backward()
            loss_sum += loss.item() / cfg.grad_accum
        loss_sum = dist.mean(loss_sum)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        it += 1
        tokens_seen += tokens_per_step
        train_loss_ema = loss_sum if train_loss_ema is None else 0.9 * train_loss_ema + 0.1 * loss_sum
        elapsed = time.time() - t_start
        tok_s = (it - start_iter) * tokens_per_step / max(elapsed, 1e-9)
        eta = (cfg.max_iters - it) * elapsed / (it - start_iter)
        metrics = {}
        if cfg.eval_interval and (it % cfg.eval_interval == 0 or it == cfg.max_iters):
            metrics = {"train_loss": _estimate(raw_model, data, "train", cfg, device, autocast),
                       "val_loss": _estimate(raw_model, data, "val", cfg, device, autocast)}
            history.append({"step": it, "lr": lr, "tokens_seen": tokens_seen, **metrics})
            if dist.is_main:
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(history[-1]) + "\n")
            text = sample(raw_model, data.tokenizer, "\n", max_new_tokens=cfg.sample_tokens, device=device,
                          seed=it) if cfg.sample_tokens and dist.is_main else ""
            msg = f"step {it}: train {metrics['train_loss']:.4f} val {metrics['val_loss']:.4f}"
            (bar.write if bar else log)(msg + (f"\n--- sample ---\n{text}\n---" if text else ""))
        if bar:
            bar.set_postfix(loss=f"{loss_sum:.3f}", lr=f"{lr:.2e}", tok_s=f"{tok_s:,.0f}")
            bar.update(1)
        if on_step is not None and on_step(StepReport(it, cfg.max_iters, loss_sum, lr, tok_s, eta, metrics)) is False:
            stopped = True
        stopped = dist.any(stopped)      # every rank stops at the same step
        if (cfg.checkpoint_interval and it % cfg.checkpoint_interval == 0) or stopped or it == cfg.max_iters:
            checkpoint(it, wall_before + time.time() - t_start)
        if stopped:
            break
    if bar:
        bar.close()
    wall = wall_before + time.time() - t_start
    train_time = time.time() - t_start

    # 4. final evaluation over the whole val split, weights and summary
    val_loss = full_loss(raw_model, data.val, cfg.block_size, device)
    summary = {
        "val_loss": round(val_loss, 5),
        "val_perplexity": round(math.exp(val_loss), 3),
        "train_loss": round(_estimate(raw_model, data, "train", cfg, device, autocast, iters=50), 5),
        "tokens_per_s": round((it - start_iter) * tokens_per_step / max(train_time, 1e-9), 1),
        "wall_s": round(wall, 1),
        "iters": it,
        "stopped_early": stopped,
        "tokens_seen": tokens_seen,
        "params": n_params,
        "val_tokens": int(len(data.val)),
        "tokenizer": data.tokenizer.kind,
        "hardware": _hardware(device) + (f" x {dist.world} processes" if dist.enabled else ""),
        "world_size": dist.world,
    }
    dist.close()
    if not dist.is_main:
        return summary
    save_weights(out / "model.safetensors", raw_model)
    (out / "config.json").write_text(json.dumps({"model": gconf.to_dict(), "train": asdict(cfg),
                                                 "data": data.provenance}, indent=2))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


@dataclass
class Distributed:
    """torchrun's environment: RANK, WORLD_SIZE, LOCAL_RANK (gloo on CPUs, NCCL on GPUs)."""
    enabled: bool = False
    rank: int = 0
    world: int = 1
    backend: str = ""
    device: torch.device | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device_name: str) -> "Distributed":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as tdist

        use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(device)
        backend = "nccl" if use_cuda else "gloo"
        if not tdist.is_initialized():
            tdist.init_process_group(backend)
        return cls(True, tdist.get_rank(), world, backend, device)

    def mean(self, value: float) -> float:
        if not self.enabled:
            return value
        import torch.distributed as tdist

        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        tdist.all_reduce(t)
        return t.item() / self.world

    def any(self, flag: bool) -> bool:
        if not self.enabled:
            return flag
        import torch.distributed as tdist

        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        tdist.all_reduce(t)
        return t.item() > 0

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as tdist

            tdist.barrier()
            tdist.destroy_process_group()


@torch.no_grad()
def _estimate(model, data: TokenStream, split: str, cfg: TrainConfig, device, autocast, iters=None) -> float:
    """Mean loss over a few random batches (a separate generator: the data stream is not disturbed)."""
    model.eval()
    gen = torch.Generator().manual_seed(12345)
    losses = []
    for _ in range(iters or cfg.eval_iters):
        x, y = data.batch(split, cfg.batch_size, cfg.block_size, gen)
        with autocast:
            _, loss, _ = model(x.to(device), y.to(device))
        losses.append(loss.item())
    model.train()
    return float(np.mean(losses))


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
