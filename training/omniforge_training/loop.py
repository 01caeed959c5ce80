"""The training loop the speech trainers share: resume from the last checkpoint, set the learning
rate of the step, one optimiser step with gradient clipping, an evaluation when due, and
`finish_step` (checkpoint, progress bar, the observer's report, stopping).

A trainer supplies what differs: `step_loss(step) -> (loss, items)` and `evaluate(step) -> metrics`.
Everything a step draws comes from generators seeded by (seed, step), so a resumed run goes on
exactly as one that never stopped.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .checkpoint import load_checkpoint, save_checkpoint
from .schedule import finish_step


@dataclass
class LoopResult:
    step: int
    wall_s: float
    loss_ema: float | None
    history: list[dict] = field(default_factory=list)


def train_loop(*, cfg, model: torch.nn.Module, opt: torch.optim.Optimizer, out: Path, total: int,
               lr_at: Callable[[int], float], step_loss: Callable[[int], tuple[torch.Tensor, int]],
               evaluate: Callable[[int], dict], eval_interval: int, checkpoint_interval: int,
               clip_norm: float, desc: str, on_step=None, log=print, progress: bool = True) -> LoopResult:
    ckpt_path = Path(out) / "checkpoints" / "last.pt"
    step, wall_before, history = 0, 0.0, []
    if cfg.resume and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step, wall_before, history = ck["step"], ck["wall_s"], ck["history"]
        if "torch_rng" in ck:
            torch.set_rng_state(ck["torch_rng"])
        log(f"resumed at step {step}")

    def checkpoint(s: int, wall: float) -> None:
        save_checkpoint(ckpt_path, {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": s,
                                    "wall_s": wall, "history": history, "torch_rng": torch.get_rng_state(),
                                    "config": asdict(cfg)})

    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, initial=step, desc=desc, unit="step")
    t_start, loss_ema = time.time(), None
    model.train()
    while step < total:
        t0 = time.time()
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss, items = step_loss(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        opt.step()
        step += 1
        loss_ema = loss.item() if loss_ema is None else 0.95 * loss_ema + 0.05 * loss.item()
        metrics = {}
        if (eval_interval and step % eval_interval == 0) or step == total:
            metrics = evaluate(step)
            history.append({"step": step, "loss": loss_ema, **metrics})
            model.train()
            log(f"step {step}: loss {loss_ema:.3f} " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()
                                                                  if isinstance(v, float)))
        if not finish_step(step=step, total=total, loss=loss.item(), shown_loss=loss_ema, lr=lr_at(step), items=items,
                           started=t0, wall=wall_before + time.time() - t_start,
                           checkpoint_interval=checkpoint_interval, checkpoint=checkpoint, bar=bar, on_step=on_step,
                           metrics=metrics):
            break
    if bar is not None:
        bar.close()
    return LoopResult(step=step, wall_s=wall_before + time.time() - t_start, loss_ema=loss_ema, history=history)
