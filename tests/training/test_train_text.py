import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from omniforge_training.train_text import TrainConfig, lr_at, train_text

TINY = dict(tokenizer="char", n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=4, lr=3e-3,
            eval_interval=0, sample_tokens=0, threads=1)


def test_cli_trains_and_prints_one_json_line(tmp_path, corpus):
    text = corpus.read_text()
    (tmp_path / "train.txt").write_text(text[:50_000])
    (tmp_path / "val.txt").write_text(text[50_000:60_000])
    cmd = [sys.executable, "-m", "omniforge_cli.main", "train", "text", "--data", str(tmp_path / "train.txt"),
           "--val-data", str(tmp_path / "val.txt"), "--tokenizer", "char", "--n-layer", "1", "--n-head", "2",
           "--n-embd", "32", "--block-size", "32", "--batch-size", "4", "--max-iters", "40", "--lr", "3e-3",
           "--dropout", "0", "--seed", "7", "--threads", "1", "--out", str(tmp_path / "run")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"val_loss", "train_loss", "tokens_per_s", "wall_s"} <= set(summary)
    assert summary["val_tokens"] == 10_000                          # the whole val file is scored
    assert summary["val_loss"] < np.log(summary["params"] and 70)   # better than uniform over the chars
    assert "it/s" in result.stderr or "step/s" in result.stderr or "s/step" in result.stderr  # progress bar
    for name in ("model.safetensors", "config.json", "tokenizer.json", "ckpt.pt"):
        assert (tmp_path / "run" / name).exists()


def test_training_loss_goes_down(tmp_path, corpus):
    summary = train_text(TrainConfig(data=str(corpus), out=str(tmp_path), max_iters=120, **TINY),
                         progress=False, log=lambda m: None)
    assert summary["train_loss"] < 2.9 and summary["val_loss"] < 3.0   # uniform over ~60 chars is 4.1


def test_resuming_from_a_checkpoint_continues_exactly(tmp_path, corpus):
    straight = train_text(TrainConfig(data=str(corpus), out=str(tmp_path / "a"), max_iters=30,
                                      checkpoint_interval=0, **TINY), progress=False, log=lambda m: None)
    # stop after 15 steps (as a cancelled or killed job would), then run again to 30
    stop_at_15 = lambda report: report.step < 15
    train_text(TrainConfig(data=str(corpus), out=str(tmp_path / "b"), max_iters=30, checkpoint_interval=0,
                           **TINY), on_step=stop_at_15, progress=False, log=lambda m: None)
    resumed = train_text(TrainConfig(data=str(corpus), out=str(tmp_path / "b"), max_iters=30,
                                     checkpoint_interval=0, **TINY), progress=False, log=lambda m: None)
    a = torch.load(tmp_path / "a" / "ckpt.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / "ckpt.pt", weights_only=False)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert straight["val_loss"] == resumed["val_loss"]


def test_config_file_and_flags(tmp_path, corpus):
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps({"data": str(corpus), "n_layer": 3, "lr": 1e-2}))
    cfg = TrainConfig.from_file(cfg_file, lr=5e-4)
    assert (cfg.n_layer, cfg.lr, cfg.min_lr) == (3, 5e-4, 5e-5)
    cfg_file.write_text(json.dumps({"n_layers": 3}))
    with pytest.raises(ValueError, match="unknown settings \\['n_layers'\\]"):
        TrainConfig.from_file(cfg_file)
    with pytest.raises(ValueError, match="batch_size=0"):
        TrainConfig(batch_size=0)


def test_schedule_warms_up_then_decays_to_min_lr():
    cfg = TrainConfig(lr=1e-3, warmup_iters=10, max_iters=110)
    lrs = [lr_at(i, cfg) for i in range(111)]
    assert lrs[0] < lrs[5] < lrs[10] and max(lrs) == pytest.approx(1e-3, rel=1e-2)
    assert lrs[-1] == pytest.approx(1e-4)
