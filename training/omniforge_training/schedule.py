"""What every trainer shares: the learning-rate schedule, the order batches come in, and a moving
average of the weights.

The first two are pure functions of the step, so a run resumed from a checkpoint at step s goes on with
the same learning rates and the same batches as a run that never stopped.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch


def warmup_cosine(step: int, *, lr: float, min_lr: float, warmup: int, total: int) -> float:
    """Linear warm-up to `lr` over `warmup` steps, then cosine decay to `min_lr` at `total`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def epoch_batch(items: np.ndarray, *, step: int, batch_size: int, seed: int) -> np.ndarray:
    """The items of batch `step`: epochs are permutations that depend only on (seed, epoch)."""
    per_epoch = max(1, len(items) // batch_size)
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(items)
    return np.sort(perm[k * batch_size:(k + 1) * batch_size])


def length_buckets(lengths, budget: float) -> list[np.ndarray]:
    """Indices grouped by similar length (sorted, stable) so that each group's padded size
    (longest x count) stays within `budget`: speech batches of seconds or frames."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    batches, cur = [], []
    for i in order:
        if cur and lengths[int(i)] * (len(cur) + 1) > budget:
            batches.append(np.array(cur))
            cur = []
        cur.append(int(i))
    if cur:
        batches.append(np.array(cur))
    return batches


def bucket_at(batches: list[np.ndarray], *, step: int, seed: int) -> np.ndarray:
    """The bucket of step `step`: each epoch visits every bucket once, in an order that depends
    only on (seed, epoch)."""
    epoch, k = divmod(step, len(batches))
    return batches[np.random.default_rng([seed, epoch]).permutation(len(batches))[k]]


def finish_step(*, step: int, total: int, loss: float, shown_loss: float, lr: float, items: int, started: float,
                wall: float, checkpoint_interval: int, checkpoint, bar, on_step, metrics: dict) -> bool:
    """What ends every training step: a checkpoint when due (and at the last step), the progress
    bar, and the observer's report. False when the observer asked to stop (a checkpoint is written
    first, so the run resumes from exactly there)."""
    from .train_text import StepReport

    dt = time.time() - started
    if (checkpoint_interval and step % checkpoint_interval == 0) or step == total:
        checkpoint(step, wall)
    if bar is not None:
        bar.update(1)
        bar.set_postfix(loss=f"{shown_loss:.4f}", s_step=f"{dt:.2f}")
    if on_step is not None:
        report = StepReport(step=step, max_iters=total, loss=loss, lr=lr, tokens_per_s=items / dt,
                            eta_s=(total - step) * dt, metrics=metrics)
        if on_step(report) is False:
            checkpoint(step, wall)
            return False
    return True


class EMA:
    """Exponential moving average of a model's weights (decay 0.999 suits short runs)."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))          # warm up: early weights are noise
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                # lerp, not mul and add: a weight that does not move (a locked layer) stays bit for bit
                self.shadow[k].lerp_(v.detach().float(), 1 - d)
            else:
                self.shadow[k].copy_(v)

    def copy_to(self, model: torch.nn.Module) -> None:
        model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in self.shadow.items()})
