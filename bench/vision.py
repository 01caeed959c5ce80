"""Vision benchmarks, side by side in one run.

  vision   image-encoder images/s: our ONNX graph (onnxruntime) vs torch eager on the same weights,
           at batch 1 and 64, interleaved; caption latency of the caption engine (greedy, beams
           of 3, and 8 concurrent requests batched) on the starter bundles; text-to-image seconds per
           64 px image at 10/25/50 DDIM steps with guidance (batch 2 per step): the service's numpy
           DDIM around the ONNX U-Net vs torch-eager diffusers (DDIMScheduler) on the same weights.
"""
from __future__ import annotations

import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _exported(kind: str, *starters: Path, export) -> Path:
    """A starter's bundle exported once into the temp folder, under a name keyed by the weights it
    was made from (a retrained starter is exported again, not benchmarked stale)."""
    from omniforge_shared.bundle import sha256_file

    key = "-".join(sha256_file(d / "model.safetensors")[:12] for d in starters)
    out = Path(tempfile.gettempdir()) / f"omniforge-bench-{kind}-{key}"
    if not (out / "manifest.json").exists():
        export(out)
    return out


def _starter_bundles() -> tuple[Path, Path | None, np.ndarray]:
    from omniforge_training.data.image_text import load_image_text
    from omniforge_training.data.starter_images import build_starter_images
    from omniforge_training.export_caption import export_caption_bundle
    from omniforge_training.export_clip import export_clip_bundle
    from omniforge_training.starter.vision import STARTER_CAPTION_DIR, STARTER_CLIP_DIR

    tmp = Path(tempfile.gettempdir())
    data = tmp / "omniforge-bench-images"
    if not (data / "dataset.json").exists():
        build_starter_images(data, progress=False, log=lambda m: None)
    images = np.asarray(load_image_text(data).images[:512])
    clip = _exported("clip", STARTER_CLIP_DIR, export=lambda out: export_clip_bundle(
        STARTER_CLIP_DIR, out, name="clip-starter", version="bench", sample_images=images[:8], log=lambda m: None))
    caption = None
    if (STARTER_CAPTION_DIR / "manifest.json").exists():
        caption = _exported("caption", STARTER_CAPTION_DIR, STARTER_CLIP_DIR, export=lambda out: export_caption_bundle(
            STARTER_CAPTION_DIR, STARTER_CLIP_DIR, out, name="captioner-starter", version="bench",
            sample_images=images[:4], log=lambda m: None))
    return clip, caption, images


def _rate(fn, n_images: int, seconds: float = 2.0) -> float:
    fn()                                                    # warm-up
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        done += n_images
    return done / (time.perf_counter() - t0)


def bench_vision(threads: int = 2, rounds: int = 3) -> dict:
    import onnxruntime as ort
    import torch

    from omniforge_shared.bundle import load_bundle
    from omniforge_shared.images import to_model_input
    from omniforge_training.export_clip import load_clip
    from omniforge_training.starter.vision import STARTER_CLIP_DIR

    torch.set_num_threads(threads)
    clip_dir, caption_dir, images = _starter_bundles()
    bundle = load_bundle(clip_dir)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(bundle.file("image-encoder")), opts, providers=["CPUExecutionProvider"])
    model = load_clip(STARTER_CLIP_DIR)
    size = model.config.vision.image_size
    out = {"image_encoder": {}}
    for batch in (1, 64):
        pixels = to_model_input(list(images[:batch]), size)
        x = torch.from_numpy(pixels)
        ort_rates, torch_rates = [], []
        for _ in range(rounds):                             # interleaved: drift hits both sides alike
            ort_rates.append(_rate(lambda: sess.run(None, {"pixel_values": pixels}), batch))
            with torch.inference_mode():
                torch_rates.append(_rate(lambda: model.encode_image(x), batch))
        o, t = statistics.median(ort_rates), statistics.median(torch_rates)
        out["image_encoder"][f"batch_{batch}"] = {"onnxruntime_images_per_s": round(o, 1),
                                                  "torch_eager_images_per_s": round(t, 1), "ratio": round(o / t, 2)}
    if caption_dir is not None:
        out["caption"] = _caption_latency(caption_dir, images, threads)
    from omniforge_training.starter.vision import STARTER_DIFFUSION_DIR

    if (STARTER_DIFFUSION_DIR / "manifest.json").exists():
        out["text_to_image"] = _text_to_image(threads, rounds)
    return out


def _text_to_image(threads: int, rounds: int, prompt: str = "a red apple") -> dict:
    import torch

    from omniforge_image.engine import DiffusionEngine, GenerateParams
    from omniforge_shared.bundle import load_bundle
    from omniforge_training.export_diffusion import export_diffusion_bundle, load_unet
    from omniforge_training.models.unet import make_scheduler
    from omniforge_training.starter.vision import STARTER_CLIP_DIR, STARTER_DIFFUSION_DIR
    from omniforge_training.train_diffusion import sample_torch

    bundle_dir = _exported("diffusion", STARTER_DIFFUSION_DIR, STARTER_CLIP_DIR, export=lambda out: export_diffusion_bundle(
        STARTER_DIFFUSION_DIR, STARTER_CLIP_DIR, out, name="diffusion-starter", version="bench", log=lambda m: None))
    engine = DiffusionEngine(load_bundle(bundle_dir), threads=threads)
    unet, cfg = load_unet(STARTER_DIFFUSION_DIR)
    ddim = make_scheduler(cfg, "ddim")
    cond = torch.from_numpy(engine.text_tower([prompt]))

    def served(steps):
        t0 = time.perf_counter()
        list(engine.generate(GenerateParams(prompt=prompt, steps=steps, seed=0)))
        return time.perf_counter() - t0

    def eager(steps):
        t0 = time.perf_counter()
        with torch.inference_mode():
            sample_torch(unet, ddim, cond, steps=steps, guidance=3.0, size=cfg.image_size,
                         generator=torch.Generator().manual_seed(0))
        return time.perf_counter() - t0

    served(2), eager(2)                                     # warm-up
    res = {"image_size": cfg.image_size, "guidance": 3.0}
    for steps in (10, 25, 50):
        ours, theirs = [], []
        for _ in range(rounds):                             # interleaved
            ours.append(served(steps))
            theirs.append(eager(steps))
        o, t = statistics.median(ours), statistics.median(theirs)
        res[f"steps_{steps}"] = {"onnx_numpy_s_per_image": round(o, 3), "torch_diffusers_s_per_image": round(t, 3),
                                 "speedup": round(t / o, 2)}
    return res


def _caption_latency(caption_dir: Path, images: np.ndarray, threads: int, n: int = 40) -> dict:
    from concurrent.futures import wait

    from PIL import Image

    from omniforge_fusion.captioner import CaptionEngine, CaptionParams
    from omniforge_shared.bundle import load_bundle

    def png(a):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "PNG")
        return buf.getvalue()

    blobs = [png(images[i]) for i in range(n)]
    engine = CaptionEngine(load_bundle(caption_dir), threads=threads)
    try:
        res = {}
        for label, params in (("greedy", CaptionParams()), ("beams_3", CaptionParams(num_beams=3))):
            engine.submit(blobs[0], params).result()
            lat = []
            for b in blobs:
                t0 = time.perf_counter()
                engine.submit(b, params).result()
                lat.append(time.perf_counter() - t0)
            res[label] = {"p50_ms": round(1000 * statistics.median(lat), 1),
                          "p90_ms": round(1000 * sorted(lat)[int(0.9 * len(lat))], 1)}
        t0 = time.perf_counter()
        for start in range(0, n, 8):
            wait([engine.submit(b, CaptionParams()) for b in blobs[start:start + 8]])
        res["greedy_8_concurrent"] = {"captions_per_s": round(n / (time.perf_counter() - t0), 1),
                                      "vs_one_at_a_time": round((n / (time.perf_counter() - t0))
                                                                / (1000 / res["greedy"]["p50_ms"]), 2)}
        return res
    finally:
        engine.stop()
