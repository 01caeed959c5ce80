"""Exports a trained text-to-image U-Net (EMA weights) for the torch-free serving path.

  unet.onnx            sample (B, 3, S, S), timestep (B,) int64, encoder_hidden_states (B, 1, D)
                       -> model_output (B, 3, S, S): v or the noise, as the manifest's scheduler
                       says; batch is dynamic, so guidance runs as batch 2B
  text_encoder.onnx    the CLIP text tower (MiniLM + projection): prompt -> condition (B, D)
  alphas_cumprod.npy   the training schedule, which the numpy DDIM sampler must follow exactly

Checked: the U-Net graph against torch, and a whole numpy-DDIM + onnxruntime sampling run
against diffusers' DDIMScheduler + torch on the same noise.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from omniforge_shared.bundle import Bundle, write_bundle

from .export_onnx import code_version
from .models.unet import UNetConfig, build_unet, make_scheduler

PARITY_TOLERANCE = 1e-3
TASK = "text-to-image"


def load_unet(run_dir: Path):
    from safetensors.torch import load_file

    cfg = UNetConfig.from_dict(json.loads((Path(run_dir) / "config.json").read_text()))
    unet = build_unet(cfg)
    unet.load_state_dict({k: v.float() for k, v in load_file(str(Path(run_dir) / "model.safetensors")).items()})
    return unet.eval(), cfg


def numpy_sample(session, cfg_ddim, context: np.ndarray, noise: np.ndarray, *, steps: int, guidance: float) -> np.ndarray:
    """The serving sampler (numpy DDIM around the ONNX U-Net), also used for the parity check."""
    from omniforge_shared.scheduling_ddim import ddim_step, guided, timesteps

    x = noise.astype(np.float32)
    both = np.concatenate([context, np.zeros_like(context)])[:, None].astype(np.float32)
    for t in timesteps(cfg_ddim, steps):
        eps = session.run(["model_output"], {"sample": np.concatenate([x, x]),
                                           "timestep": np.full(2 * len(x), t, np.int64),
                                           "encoder_hidden_states": both})[0]
        eps_c, eps_u = np.split(eps, 2)
        x = ddim_step(cfg_ddim, guided(eps_c, eps_u, guidance), int(t), x, steps)
    return np.clip(x, -1, 1)


def export_diffusion_bundle(run_dir: Path, clip_dir: Path, out: Path, *, name: str, version: str, log=print,
                            extra: dict | None = None) -> Bundle:
    import onnxruntime as ort

    from omniforge_shared.scheduling_ddim import DDIMConfig

    from .export_clip import TextEncoder, load_clip
    from .models.minilm import MiniLM, load_tokenizer, model_dir

    t0 = time.time()
    run_dir, out = Path(run_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unet, cfg = load_unet(run_dir)
    S, D = cfg.image_size, cfg.cross_attention_dim
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(2, 3, S, S, generator=g), torch.nn.functional.normalize(torch.randn(2, 1, D, generator=g), dim=-1)
    t = torch.tensor([999, 10])
    den = unet.eval()
    with torch.no_grad():
        torch.onnx.export(den, (x, t, c), str(out / "unet.onnx"), input_names=["sample", "timestep", "encoder_hidden_states"],
                          output_names=["model_output"], opset_version=18, dynamo=False,
                          dynamic_axes={n: {0: "batch"} for n in ("sample", "timestep", "encoder_hidden_states", "model_output")})
        want = den(x, t, c).numpy()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(out / "unet.onnx"), opts, providers=["CPUExecutionProvider"])
    unet_parity = float(np.abs(sess.run(None, {"sample": x.numpy(), "timestep": t.numpy(),
                                              "encoder_hidden_states": c.numpy()})[0] - want).max())
    # a whole sampling run: numpy DDIM + onnxruntime vs diffusers DDIM + torch, same noise
    from .train_diffusion import sample_torch

    ddim = make_scheduler(cfg, "ddim")
    alphas = ddim.alphas_cumprod.double().numpy()
    np.save(out / "alphas_cumprod.npy", alphas)
    dcfg = DDIMConfig.from_dict(cfg.scheduler, alphas)
    cond = c[:, 0]
    gen = torch.Generator().manual_seed(1)
    torch_images = sample_torch(unet, ddim, cond, steps=10, guidance=3.0, size=S, generator=gen).numpy()
    noise = torch.randn(2, 3, S, S, generator=torch.Generator().manual_seed(1)).numpy()
    np_images = numpy_sample(sess, dcfg, cond.numpy(), noise, steps=10, guidance=3.0)
    sampler_parity = float(np.abs(np_images - torch_images).max())
    log(f"onnx parity: unet {unet_parity:.1e}, 10-step DDIM sampling {sampler_parity:.1e} (tolerance {PARITY_TOLERANCE:g})")
    if not max(unet_parity, sampler_parity) < PARITY_TOLERANCE:
        raise RuntimeError(f"exported U-Net or sampler differ from torch by {max(unet_parity, sampler_parity):.2e}")
    # the prompt encoder: the conditioning CLIP's text tower
    clip = load_clip(Path(clip_dir))
    tok = load_tokenizer()
    enc = tok.encode_batch(["a red heart", "flag of Egypt"])
    ids, mask = torch.tensor([e.ids for e in enc]), torch.tensor([e.attention_mask for e in enc])
    with torch.no_grad():
        torch.onnx.export(TextEncoder(clip, MiniLM()).eval(), (ids, mask), str(out / "text_encoder.onnx"),
                          input_names=["input_ids", "attention_mask"], output_names=["text_embeds"], opset_version=18,
                          dynamo=False, dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                                      "attention_mask": {0: "batch", 1: "tokens"},
                                                      "text_embeds": {0: "batch"}})
    shutil.copy2(model_dir() / "tokenizer.json", out / "tokenizer.json")
    shutil.copy2(run_dir / "config.json", out / "config.json")
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    metrics = {k: v for k, v in summary.get("quality", {}).items() if isinstance(v, float)}
    metrics |= {"onnx_parity_unet": unet_parity, "onnx_parity_sampling": sampler_parity}
    files = {"unet.onnx": "unet", "text_encoder.onnx": "text-encoder", "tokenizer.json": "tokenizer",
             "alphas_cumprod.npy": "alphas-cumprod", "config.json": "config"}
    if (run_dir / "samples.png").exists():
        shutil.copy2(run_dir / "samples.png", out / "samples.png")
        files["samples.png"] = "sample-grid"
    bundle = write_bundle(
        out, name=name, version=version, task=TASK,
        architecture={"family": "unet", "config": cfg.to_dict(), "params": sum(p.numel() for p in unet.parameters())},
        files=files, scheduler=cfg.scheduler, image_size=S, condition={"dimensions": D, "tower": "clip text"},
        metrics=metrics, training={k: summary[k] for k in ("wall_s", "steps") if k in summary},
        data={"dataset": summary.get("dataset"), "content_hash": summary.get("dataset_hash")},
        code_version=code_version(), export_seconds=round(time.time() - t0, 1), **(extra or {}))
    log(f"bundle {name}:{version} written to {out}")
    return bundle
