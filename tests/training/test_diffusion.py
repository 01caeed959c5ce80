"""Text-to-image: the numpy DDIM sampler follows diffusers step for step, the trainer resumes
exactly, and the exported bundle samples like torch."""
import json

import numpy as np
import pytest
import torch

from omniforge_shared.scheduling_ddim import DDIMConfig, ddim_step, guided, timesteps
from omniforge_training.models.unet import UNetConfig, make_scheduler


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [1, 10, 25, 50])
def test_numpy_ddim_matches_diffusers(spacing, steps):
    cfg = UNetConfig()
    cfg.scheduler["timestep_spacing"] = spacing
    ref = make_scheduler(cfg, "ddim")
    ref.set_timesteps(steps)
    ours = DDIMConfig.from_dict(cfg.scheduler, ref.alphas_cumprod.double().numpy())
    assert timesteps(ours, steps).tolist() == ref.timesteps.tolist()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    xt = torch.from_numpy(x.copy())
    for t in ref.timesteps:
        eps = rng.standard_normal(x.shape).astype(np.float32) * 0.5
        x = ddim_step(ours, eps, int(t), x, steps)
        xt = ref.step(torch.from_numpy(eps), t, xt).prev_sample
    assert np.abs(x - xt.numpy()).max() < 1e-4


def test_guidance_formula():
    c, u = np.array([2.0]), np.array([1.0])
    assert guided(c, u, 1.0) == 2.0 and guided(c, u, 0.0) == 1.0 and guided(c, u, 3.0) == 4.0


def test_steps_out_of_range_are_refused():
    ours = DDIMConfig.from_dict(UNetConfig().scheduler, np.linspace(0.999, 0.01, 1000))
    with pytest.raises(ValueError, match="steps=0 is out of range"):
        timesteps(ours, 0)


def test_resume_reaches_the_same_weights(tiny_images, tiny_clip_run, tmp_path):
    from safetensors.torch import load_file

    from omniforge_training.train_diffusion import DiffusionTrainConfig, train_diffusion

    def cfg(out):
        return DiffusionTrainConfig(data=str(tiny_images), clip=str(tiny_clip_run), out=str(out), image_size=16,
                                    channels=(16, 32), batch_size=8, max_steps=4, eval_interval=0,
                                    checkpoint_interval=2, eval_concepts=4, eval_steps=2, threads=1)
    train_diffusion(cfg(tmp_path / "a"), progress=False, log=lambda m: None)
    train_diffusion(cfg(tmp_path / "b"), progress=False, log=lambda m: None, on_step=lambda r: r.step < 2)
    train_diffusion(cfg(tmp_path / "b"), progress=False, log=lambda m: None)
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6


def test_a_run_starts_from_earlier_weights_and_refuses_another_shape(tiny_images, tiny_clip_run, tiny_diffusion_run,
                                                                     tmp_path):
    from safetensors.torch import load_file

    from omniforge_training.train_diffusion import DiffusionTrainConfig, train_diffusion

    def cfg(channels):
        return DiffusionTrainConfig(data=str(tiny_images), clip=str(tiny_clip_run), out=str(tmp_path / "more"),
                                    image_size=16, channels=channels, batch_size=8, max_steps=0, eval_interval=0,
                                    eval_concepts=4, eval_steps=2, threads=1, init=str(tiny_diffusion_run))
    # no steps taken: the new run is the old one's weights
    summary = train_diffusion(cfg((16, 32)), progress=False, log=lambda m: None)
    assert summary["config"]["init"] == str(tiny_diffusion_run)
    old, new = load_file(tiny_diffusion_run / "model.safetensors"), load_file(tmp_path / "more" / "model.safetensors")
    assert max((old[k] - new[k]).abs().max().item() for k in old) == 0
    with pytest.raises(ValueError, match="another shape \\(channels differ\\).*--channels"):
        train_diffusion(cfg((16, 48)), progress=False, log=lambda m: None)


def test_a_starter_trained_further_records_its_lineage(tiny_images, tiny_clip_run, tiny_diffusion_run, tmp_path):
    from omniforge_training.starter.vision import package_diffusion_starter
    from omniforge_training.train_diffusion import DiffusionTrainConfig, train_diffusion

    starter = tmp_path / "starter"
    first = package_diffusion_starter(tiny_diffusion_run, tiny_images, version="1", out=starter)
    assert "trained_from" not in first
    more = tmp_path / "more"
    train_diffusion(DiffusionTrainConfig(data=str(tiny_images), clip=str(tiny_clip_run), out=str(more), image_size=16,
                                         channels=(16, 32), batch_size=8, max_steps=2, eval_interval=0,
                                         eval_concepts=4, eval_steps=2, threads=1, init=str(starter)),
                    progress=False, log=lambda m: None)
    second = package_diffusion_starter(more, tiny_images, version="2", out=starter)
    assert second["trained_from"]["version"] == "1" and second["trained_from"]["steps"] == first["steps"] == 12
    assert second["total_steps"] == 14 and second["total_wall_s"] >= first["wall_s"]
    assert json.loads((starter / "manifest.json").read_text())["version"] == "2"
    # the packaged files name the repository's folders, not the packager's
    assert str(tmp_path) not in (starter / "manifest.json").read_text() + (starter / "summary.json").read_text()


def test_eval_reports_the_concept_hit_beside_real_images(tiny_diffusion_run, tiny_clip_run, tiny_images, tmp_path):
    from omniforge_training.eval_diffusion import evaluate_diffusion

    q = evaluate_diffusion(tiny_diffusion_run, tiny_clip_run, tiny_images, tmp_path / "eval", n_concepts=4, steps=2,
                           threads=1, log=lambda m: None)
    assert q["concepts"] == 4 and 0 <= q["top5_concept_hit"] <= 1 and 0 <= q["real_images_top5_concept_hit"] <= 1
    assert json.loads((tmp_path / "eval" / "quality.json").read_text())["real_images"] == q["real_images"] > 0
    assert (tmp_path / "eval" / "samples.png").stat().st_size > 0
    with pytest.raises(FileNotFoundError, match="not a diffusion run or starter folder: config.json is missing"):
        evaluate_diffusion(tmp_path, tiny_clip_run, tiny_images, tmp_path / "x", threads=1)


def test_the_bundle_samples_like_torch_and_reports_quality(tiny_diffusion_bundle):
    from omniforge_shared.bundle import load_bundle

    b = load_bundle(tiny_diffusion_bundle)
    assert b.task == "text-to-image" and b.manifest["image_size"] == 16
    m = b.manifest["metrics"]
    assert m["onnx_parity_unet"] < 1e-3 and m["onnx_parity_sampling"] < 1e-3
    for key in ("top5_concept_hit", "clip_score", "clip_score_shuffled_prompts", "frechet_distance_own_features"):
        assert key in m
    assert b.has("sample-grid")


def test_recipe_params_refuse_a_u_net_that_does_not_fit_the_image():
    from pydantic import ValidationError

    from omniforge_shared.jobs.specs import DiffusionParams

    assert DiffusionParams().image_size == 64
    with pytest.raises(ValidationError, match="image_size 16 must divide by patch x 2\\^\\(levels-1\\) = 32"):
        DiffusionParams(image_size=16, patch=2, channels=[32, 64, 128, 128, 128])
    with pytest.raises(ValidationError, match="multiples of 16"):
        DiffusionParams(channels=[24, 48])


def test_the_denoiser_folds_patches_and_answers_in_image_shape():
    from omniforge_training.models.unet import build_unet

    cfg = UNetConfig(image_size=16, patch=2, channels=(16, 32))
    assert cfg.attention == (False, True)
    unet = build_unet(cfg)
    x = torch.randn(3, 3, 16, 16)
    out = unet(x, torch.tensor([1, 500, 999]), torch.randn(3, 1, 256))
    assert out.shape == x.shape and unet.unet.config.in_channels == 12
    with pytest.raises(ValueError, match="one flag per level"):
        UNetConfig(channels=(16, 32), attention=(True,))
