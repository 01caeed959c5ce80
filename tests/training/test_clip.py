"""The CLIP recipe: it learns, it resumes to the same weights, and its ONNX graphs match torch."""
import json

import numpy as np
import pytest
import torch

from omniforge_training.data.image_text import load_image_text
from omniforge_training.eval_vision import recall_at_k
from omniforge_training.train_clip import CLIPTrainConfig, train_clip

TINY = dict(image_size=32, patch_size=4, n_layer=2, n_head=2, n_embd=32, batch_size=32, warmup_steps=5, lr=3e-3,
            eval_interval=0, threads=1)


def test_training_aligns_images_with_their_names(tiny_clip_run, tiny_images):
    from omniforge_training.export_clip import load_clip
    from omniforge_training.train_clip import embed_images

    summary = json.loads((tiny_clip_run / "summary.json").read_text())
    assert summary["steps"] == 100 and summary["history"][0]["step"] == 50
    # on the concepts it trained on, an image finds its own name far above chance
    ds = load_image_text(tiny_images)
    model = load_clip(tiny_clip_run)
    text = torch.load(tiny_clip_run / "text_features.pt", weights_only=False)
    names = model.encode_text_features(text["names"]).detach().numpy()
    idx = ds.train_items()
    sim = embed_images(model, ds.images, idx) @ names.T
    r5 = recall_at_k(sim, ds.item_concept[idx], np.arange(len(ds.concepts)))["R@5"]
    chance = 5 / len(ds.concepts)
    assert r5 > 3 * chance, (r5, chance)
    for split in ("val", "heldout_style", "unseen_concepts", "unseen_all_names"):
        assert set(summary["retrieval"][split]) >= {"i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1"}


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_resume_reaches_the_same_weights(tiny_images, tmp_path, ema_decay):
    def config(out):
        return CLIPTrainConfig(data=str(tiny_images), out=str(out), max_steps=8, checkpoint_interval=4,
                               ema_decay=ema_decay, **TINY)

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train_clip(config(straight), progress=False, log=lambda m: None)
    stop_at = []

    def stop_after_4(report):
        stop_at.append(report.step)
        return report.step < 4

    train_clip(config(resumed), progress=False, log=lambda m: None, on_step=stop_after_4)
    assert stop_at[-1] == 4
    train_clip(config(resumed), progress=False, log=lambda m: None)
    from safetensors.torch import load_file

    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6


def test_the_weight_average_keeps_a_weight_that_does_not_move_exactly():
    """A locked layer must come out of a long averaged run bit for bit (mul-and-add rounding drifts it)."""
    from omniforge_training.schedule import EMA

    layer = torch.nn.Linear(64, 32)
    ema = EMA(layer, decay=0.998)
    for step in range(1600):
        ema.update(layer, step)
    assert torch.equal(ema.shadow["weight"], layer.weight.detach())


def test_a_weight_average_is_the_model_when_asked(tiny_images, tiny_clip_run, tmp_path):
    """--ema-decay keeps a moving average of the weights: the average is what is saved (and so exported and
    served), the raw weights' retrieval stays in the summary to compare, and a run without an average
    cannot be resumed as one that has it."""
    from safetensors.torch import load_file

    from omniforge_training.checkpoint import load_checkpoint

    out = tmp_path / "ema"
    summary = train_clip(CLIPTrainConfig(data=str(tiny_images), out=str(out), max_steps=6, checkpoint_interval=3,
                                         ema_decay=0.9, **{**TINY, "eval_interval": 3}),
                         progress=False, log=lambda m: None)
    ck = load_checkpoint(out / "checkpoints" / "last.pt")
    saved = load_file(out / "model.safetensors")
    assert max((saved[k].float() - ck["ema"][k]).abs().max().item() for k in saved) < 1e-3
    assert not torch.equal(saved["image_proj.weight"].float(), ck["model"]["image_proj.weight"].float())
    assert summary["retrieval_raw_weights"]["heldout_style"]["queries"] == summary["retrieval"]["heldout_style"]["queries"]
    assert {"ema_val_i2t_R@1", "ema_heldout_style_i2t_R@1"} <= set(summary["history"][-1])
    # averaged with the text side locked, the shared space still does not move by a bit
    locked = tmp_path / "locked"
    train_clip(CLIPTrainConfig(data=str(tiny_images), out=str(locked), max_steps=3, embed_dim=256, ema_decay=0.9,
                               init=str(tiny_clip_run), lock_text=True, **TINY), progress=False, log=lambda m: None)
    before, after = load_file(tiny_clip_run / "model.safetensors"), load_file(locked / "model.safetensors")
    assert torch.equal(before["text_proj.weight"], after["text_proj.weight"])
    assert not torch.equal(before["image_proj.weight"], after["image_proj.weight"])
    plain = tmp_path / "plain"
    train_clip(CLIPTrainConfig(data=str(tiny_images), out=str(plain), max_steps=2, checkpoint_interval=1, **TINY),
               progress=False, log=lambda m: None, on_step=lambda r: r.step < 1)
    with pytest.raises(ValueError, match="without a weight average"):
        train_clip(CLIPTrainConfig(data=str(tiny_images), out=str(plain), max_steps=2, ema_decay=0.9, **TINY),
                   progress=False, log=lambda m: None)


def test_bad_settings_are_clear(tiny_images, tmp_path):
    with pytest.raises(ValueError, match="needs a dataset built at that size"):
        train_clip(CLIPTrainConfig(data=str(tiny_images), out=str(tmp_path), **{**TINY, "image_size": 128}),
                   progress=False, log=lambda m: None)
    with pytest.raises(ValueError, match="batch_size=100000 needs more"):
        train_clip(CLIPTrainConfig(data=str(tiny_images), out=str(tmp_path), **{**TINY, "batch_size": 100000}),
                   progress=False, log=lambda m: None)


def test_a_run_continues_from_a_trained_clip_with_the_text_side_locked(tiny_clip_run, tiny_images, tmp_path):
    """--init starts from the trained weights (not from scratch); --lock-text keeps the shared space where
    it was: the text projection comes out bit for bit the same while the image tower moves."""
    from safetensors.torch import load_file

    before = json.loads((tiny_clip_run / "summary.json").read_text())["retrieval"]["heldout_style"]["i2t_R@5"]
    out = tmp_path / "more"
    summary = train_clip(CLIPTrainConfig(data=str(tiny_images), out=str(out), max_steps=3, embed_dim=256,
                                         init=str(tiny_clip_run), lock_text=True, **{**TINY, "lr": 1e-5}),
                         progress=False, log=lambda m: None)
    # three steps at a tiny learning rate from the trained weights: the recall it had, not chance's
    after = summary["retrieval"]["heldout_style"]["i2t_R@5"]
    assert abs(after - before) < 0.1, (before, after)
    a, b = load_file(tiny_clip_run / "model.safetensors"), load_file(out / "model.safetensors")
    assert torch.equal(a["text_proj.weight"], b["text_proj.weight"])
    assert not torch.equal(a["image_proj.weight"], b["image_proj.weight"])
    # a different shape is refused with what must match
    with pytest.raises(ValueError, match="different shape.*vision"):
        train_clip(CLIPTrainConfig(data=str(tiny_images), out=str(tmp_path / "other"), init=str(tiny_clip_run),
                                   **{**TINY, "n_embd": 64}), progress=False, log=lambda m: None)
    with pytest.raises(ValueError, match="expected a CLIP run"):
        train_clip(CLIPTrainConfig(data=str(tiny_images), out=str(tmp_path / "none"), init=str(tmp_path),
                                   **TINY), progress=False, log=lambda m: None)


def test_onnx_bundle_matches_torch_and_is_unit_length(tiny_clip_bundle, tiny_clip_run, tiny_images):
    import onnxruntime as ort

    from omniforge_shared.bundle import load_bundle
    from omniforge_shared.images import to_model_input
    from omniforge_training.export_clip import load_clip

    bundle = load_bundle(tiny_clip_bundle)
    assert bundle.task == "embedding" and bundle.manifest["embedding"]["dimensions"] == 256
    assert bundle.manifest["metrics"]["onnx_parity_image"] < 1e-4
    ds = load_image_text(tiny_images)
    pixels = to_model_input(list(ds.images[:5]), 32)       # the serving path's preprocessing
    sess = ort.InferenceSession(str(bundle.file("image-encoder")), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"pixel_values": pixels})[0]
    want = load_clip(tiny_clip_run).encode_image(torch.from_numpy(pixels)).detach().numpy()
    assert np.abs(got - want).max() < 1e-4
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_our_own_text_tower_trains_and_exports(tiny_images, tmp_path):
    from omniforge_shared.bundle import load_bundle
    from omniforge_shared.encoders import TextEmbedder
    from omniforge_training.export_clip import export_clip_bundle, load_clip

    out = tmp_path / "own"
    summary = train_clip(CLIPTrainConfig(data=str(tiny_images), out=str(out), max_steps=30, text_tower="own",
                                         text_layers=1, text_embd=32, **TINY), progress=False, log=lambda m: None)
    assert summary["retrieval"]["val"]["queries"] > 0
    clip = load_clip(out)
    assert clip.text is not None and clip.config.text.vocab_size == 4096
    bundle = export_clip_bundle(out, tmp_path / "bundle", name="own-clip", version="1",
                                sample_images=load_image_text(tiny_images).images[:4], log=lambda m: None)
    assert bundle.manifest["metrics"]["onnx_parity_text"] < 1e-4
    v = TextEmbedder(load_bundle(bundle.path))(["a red heart", "grinning face"])
    assert v.shape == (2, 256) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)


def test_augmentation_flattens_shading_but_keeps_colour():
    from omniforge_training.train_clip import make_augment

    # a red disc with a soft gradient on white: flattening leaves fewer colour levels, and no
    # augmentation turns it into another colour (a red heart is not a blue one)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    disc = (xx ** 2 + yy ** 2 < 0.5).float()
    shade = 0.55 + 0.4 * (xx + 1) / 2
    img = torch.stack([1 - disc * (1 - shade), 1 - disc * 0.9, 1 - disc * 0.9]).expand(64, 3, 64, 64).clone()
    torch.manual_seed(0)
    flat = make_augment(CLIPTrainConfig(flat_p=1.0, blur_p=0.0, brightness=0, contrast=0, saturation=0))(img)
    levels = [len(torch.unique((f[0] * 255).round())) for f in flat]
    assert np.median(levels) < len(torch.unique((img[0, 0] * 255).round())) / 2
    augmented = make_augment(CLIPTrainConfig())(img)
    red = (augmented[:, 0] > augmented[:, 1] + 0.2) & (augmented[:, 0] > augmented[:, 2] + 0.2)
    blue_or_green = (augmented[:, 2] > augmented[:, 0] + 0.2) | (augmented[:, 1] > augmented[:, 0] + 0.2)
    assert red.flatten(1).sum(1).min() > 200 and blue_or_green.sum() == 0
