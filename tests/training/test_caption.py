"""The captioner recipe: colour targets from pixels, caption metrics, training, resume, export."""
import json

import numpy as np
import pytest

from omniforge_training.eval_caption import bleu4, cider_d
from omniforge_training.train_caption import colour_words


def test_colour_words_name_what_is_on_the_pixels():
    img = np.full((32, 32, 3), 255, np.uint8)
    img[:16] = (230, 30, 30)                 # red top half
    img[16:24] = (250, 210, 20)              # a yellow band
    assert colour_words(img) == "red and yellow"
    assert colour_words(np.full((8, 8, 3), 255, np.uint8)) == "white"
    dark = np.full((8, 8, 3), 20, np.uint8)
    assert colour_words(dark) == "black"


def test_cider_and_bleu_reward_the_reference_and_not_noise():
    refs = [["grinning face", "an emoji of a grinning face"], ["red heart", "a picture of a red heart"],
            ["bat", "an emoji of a bat"]]
    same = [r[1] for r in refs]          # 4-grams exist only in the longer phrasings
    noise = ["flag of Peru", "the moon", "keycap 4"]
    assert cider_d(same, refs) > 3.0 and cider_d(noise, refs) < 0.1
    assert bleu4(same, refs) > 50 and bleu4(noise, refs) < 10


def test_training_learns_and_reports_quality(tiny_caption_run, tiny_images):
    summary = json.loads((tiny_caption_run / "summary.json").read_text())
    first, last = summary["history"][0], summary["history"][-1]
    # well below a uniform guess over 4096 tokens (8.3 nats), and still falling
    assert last["val_loss"] < 7.3 and last["val_loss"] < first["val_loss"] and summary["steps"] == 60
    for split in ("val", "unseen_concepts", "heldout_style"):
        q = summary["quality"][split]
        assert {"bleu4", "cider_d", "exact_match", "self_retrieval_R@1", "distinct_share"} <= set(q)
    assert first["step"] == 30
    # a grid to look at: 12 held-out-style and 4 unseen-concept images, each with its caption under it
    from PIL import Image

    size = 2 * np.load(tiny_images / "images.npy", mmap_mode="r").shape[1]     # drawn at twice the size
    grid = Image.open(tiny_caption_run / "samples.png")
    assert grid.size == (8 * max(size, 110), 2 * (size + 30))


def test_resume_reaches_the_same_weights(tiny_images, tiny_clip_run, tmp_path):
    from safetensors.torch import load_file

    from omniforge_training.starter import STARTER_TEXT_DIR
    from omniforge_training.train_caption import CaptionTrainConfig, train_caption

    def cfg(out):
        return CaptionTrainConfig(data=str(tiny_images), clip=str(tiny_clip_run), out=str(out), n_layer=1, n_head=2,
                                  tokenizer=str(STARTER_TEXT_DIR / "tokenizer.json"), n_embd=32, batch_size=16,
                                  max_steps=6, warmup_steps=1, eval_interval=0, checkpoint_interval=3, threads=1)
    train_caption(cfg(tmp_path / "a"), progress=False, log=lambda m: None)
    train_caption(cfg(tmp_path / "b"), progress=False, log=lambda m: None, on_step=lambda r: r.step < 3)
    train_caption(cfg(tmp_path / "b"), progress=False, log=lambda m: None)
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6


def test_the_bundle_matches_torch(tiny_caption_bundle):
    from omniforge_shared.bundle import load_bundle

    b = load_bundle(tiny_caption_bundle)
    assert b.task == "image-caption" and b.manifest["graph"]["n_prefix"] == 17
    assert b.manifest["metrics"]["onnx_parity_decoder"] < 1e-3
    assert np.load(b.file("token-embeddings")).shape == (4096, 32)


def test_a_context_too_small_is_refused(tiny_images, tiny_clip_run, tmp_path):
    from omniforge_training.starter import STARTER_TEXT_DIR
    from omniforge_training.train_caption import CaptionTrainConfig, train_caption

    with pytest.raises(ValueError, match="cannot hold 17 prefix tokens"):
        train_caption(CaptionTrainConfig(data=str(tiny_images), clip=str(tiny_clip_run), out=str(tmp_path),
                                         tokenizer=str(STARTER_TEXT_DIR / "tokenizer.json"), block_size=24,
                                         n_embd=32, n_head=2), progress=False, log=lambda m: None)
