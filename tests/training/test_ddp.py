"""torchrun with 2 CPU processes on gloo trains the same model as one process on the same global batch."""
import json
import subprocess
import sys

import torch


def train(tmp_path, corpus, name, batch_size, nproc=None):
    args = ["train", "text", "--data", str(corpus), "--out", str(tmp_path / name), "--tokenizer", "char",
            "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "32", "--batch-size", str(batch_size),
            "--max-iters", "30", "--lr", "3e-3", "--threads", "1", "--seed", "3", "--eval-interval", "0",
            "--no-progress"]
    if nproc:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "omniforge_cli.main", *args]
    else:
        cmd = [sys.executable, "-m", "omniforge_cli.main", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, result.stdout        # only rank 0 reports
    return json.loads(lines[0])


def test_two_gloo_processes_match_one_process(tmp_path, corpus):
    single = train(tmp_path, corpus, "single", batch_size=8)
    ddp = train(tmp_path, corpus, "ddp", batch_size=4, nproc=2)
    assert ddp["world_size"] == 2 and single["world_size"] == 1
    assert ddp["tokens_seen"] == single["tokens_seen"]
    assert abs(ddp["val_loss"] - single["val_loss"]) < 1e-3, (ddp["val_loss"], single["val_loss"])
    a = torch.load(tmp_path / "single" / "ckpt.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "ddp" / "ckpt.pt", weights_only=False)["model"]
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-4, worst
