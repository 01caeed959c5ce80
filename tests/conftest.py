"""Shared fixtures: a tiny model trained for real by our pipeline, its bundle, live services."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from support import Proc, free_port, grpc_serving, shakespeare_text, wait_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory):
    """Every test run gets its own OMNIFORGE_HOME (registry, artifacts, pids)."""
    home = tmp_path_factory.mktemp("omniforge-home")
    old = os.environ.get("OMNIFORGE_HOME")
    os.environ["OMNIFORGE_HOME"] = str(home)
    # the gateways tests start are local runs: keys off unless a test turns them on (tests/gateway/test_keys.py)
    os.environ.setdefault("OMNIFORGE_GATEWAY_AUTH", "off")
    yield home
    if old is None:
        os.environ.pop("OMNIFORGE_HOME", None)
    else:
        os.environ["OMNIFORGE_HOME"] = old


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "hamlet.txt"
    path.write_text(shakespeare_text())
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, corpus) -> Path:
    """A small char-level GPT trained by `train_text` (seconds on a CPU)."""
    from omniforge_training.train_text import TrainConfig, train_text

    out = tmp_path_factory.mktemp("tiny-run")
    train_text(TrainConfig(data=str(corpus), out=str(out), tokenizer="char", n_layer=2, n_head=2, n_embd=32,
                           block_size=64, batch_size=8, max_iters=150, lr=3e-3, eval_interval=0,
                           checkpoint_interval=0, sample_tokens=0, threads=1),
               progress=False, log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_run) -> Path:
    from omniforge_training.export_onnx import export_bundle

    out = tmp_path_factory.mktemp("tiny-bundle")
    export_bundle(tiny_run, out, name="tiny", version="1", log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def text_service(tiny_bundle, tmp_path_factory):
    """The text service as a real process serving the tiny bundle, logging JSON lines."""
    port, metrics_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("logs") / "text.log"
    proc = Proc("omniforge_text.server", {"OMNIFORGE_TEXT_BUNDLE": str(tiny_bundle),
                                          "OMNIFORGE_TEXT_PORT": str(port), "OMNIFORGE_TEXT_THREADS": "1",
                                          "OMNIFORGE_TEXT_METRICS_PORT": str(metrics_port),
                                          "OMNIFORGE_TEXT_GRACE_SECONDS": "1", "OMNIFORGE_LOG_FORMAT": "json"},
                log).start()
    proc.address = f"127.0.0.1:{port}"
    proc.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    wait_for(lambda: grpc_serving(proc.address), what=f"text service on {proc.address} (log {log})")
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def gateway(text_service, tmp_path_factory):
    """The gateway as a real uvicorn process in front of `text_service`."""
    import httpx

    port = free_port()
    log = tmp_path_factory.mktemp("logs") / "gateway.log"
    proc = Proc("omniforge_gateway.app", {"OMNIFORGE_GATEWAY_PORT": str(port),
                                          "OMNIFORGE_GATEWAY_TEXT_ADDRESS": text_service.address,
                                          "OMNIFORGE_GATEWAY_FUSION_ADDRESS": "", "OMNIFORGE_GATEWAY_IMAGE_ADDRESS": "", "OMNIFORGE_GATEWAY_AUDIO_ADDRESS": "",
                                          "OMNIFORGE_GATEWAY_RETRY_AFTER_S": "1", "OMNIFORGE_LOG_FORMAT": "json"},
                log).start()
    proc.url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{proc.url}/readyz").status_code == 200, what=f"gateway (log {log})")
    yield proc
    proc.stop()


# ---- vision: a small slice of the real starter image set, a CLIP trained on it for real -------

@pytest.fixture(scope="session")
def tiny_images(tmp_path_factory) -> Path:
    """The first 60 concepts of the starter image set (all four styles), built by our builder."""
    from omniforge_training.data.starter_images import build_starter_images

    out = tmp_path_factory.mktemp("tiny-images")
    build_starter_images(out, npm_root=ROOT / "vendor" / "node_modules", limit=60, progress=False, log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def tiny_clip_run(tmp_path_factory, tiny_images) -> Path:
    from omniforge_training.train_clip import CLIPTrainConfig, train_clip

    out = tmp_path_factory.mktemp("tiny-clip")
    train_clip(CLIPTrainConfig(data=str(tiny_images), out=str(out), image_size=32, patch_size=4, n_layer=2,
                               n_head=2, n_embd=32, embed_dim=256, batch_size=32, max_steps=100, warmup_steps=5,
                               lr=3e-3, eval_interval=50, checkpoint_interval=50, threads=1),
               progress=False, log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def tiny_clip_bundle(tmp_path_factory, tiny_clip_run, tiny_images) -> Path:
    import numpy as np

    from omniforge_training.export_clip import export_clip_bundle

    out = tmp_path_factory.mktemp("tiny-clip-bundle")
    export_clip_bundle(tiny_clip_run, out, name="tiny-clip", version="1",
                       sample_images=np.load(tiny_images / "images.npy")[:8], log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def tiny_caption_run(tmp_path_factory, tiny_clip_run, tiny_images) -> Path:
    """A one-layer captioner on the tiny CLIP, with the starter text model's BPE tokenizer."""
    from omniforge_training.starter import STARTER_TEXT_DIR
    from omniforge_training.train_caption import CaptionTrainConfig, train_caption

    out = tmp_path_factory.mktemp("tiny-caption")
    train_caption(CaptionTrainConfig(data=str(tiny_images), clip=str(tiny_clip_run), out=str(out),
                                     tokenizer=str(STARTER_TEXT_DIR / "tokenizer.json"), n_layer=1, n_head=2,
                                     n_embd=32, batch_size=32, max_steps=60, warmup_steps=5, lr=3e-3,
                                     eval_interval=30, checkpoint_interval=30, threads=1),
                  progress=False, log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def tiny_caption_bundle(tmp_path_factory, tiny_caption_run, tiny_clip_run, tiny_images) -> Path:
    import numpy as np

    from omniforge_training.export_caption import export_caption_bundle

    out = tmp_path_factory.mktemp("tiny-caption-bundle")
    export_caption_bundle(tiny_caption_run, tiny_clip_run, out, name="tiny-captioner", version="1",
                          sample_images=np.load(tiny_images / "images.npy")[:4], log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def fusion_service(tiny_clip_bundle, tiny_caption_bundle, tiny_audio_tower_bundle, tmp_path_factory):
    """The fusion service as a real process: the tiny CLIP and captioner bundles, an embedded ChromaDB."""
    port, metrics_port = free_port(), free_port()
    logs = tmp_path_factory.mktemp("logs")
    proc = Proc("omniforge_fusion.server", {"OMNIFORGE_FUSION_BUNDLE": str(tiny_clip_bundle),
                                            "OMNIFORGE_FUSION_AUDIO_BUNDLE": str(tiny_audio_tower_bundle),
                                            "OMNIFORGE_FUSION_CAPTION_BUNDLE": str(tiny_caption_bundle),
                                            "OMNIFORGE_FUSION_PORT": str(port), "OMNIFORGE_FUSION_THREADS": "1",
                                            "OMNIFORGE_FUSION_METRICS_PORT": str(metrics_port),
                                            "OMNIFORGE_FUSION_CHROMA_PATH": str(logs / "chroma"),
                                            "OMNIFORGE_FUSION_GRACE_SECONDS": "1"}, logs / "fusion.log").start()
    proc.address = f"127.0.0.1:{port}"
    proc.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    proc.chroma_path = logs / "chroma"
    wait_for(lambda: grpc_serving(proc.address), timeout=60, what=f"fusion service on {proc.address} (log {proc.log})")
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def tiny_diffusion_run(tmp_path_factory, tiny_images, tiny_clip_run) -> Path:
    """A tiny U-Net trained for a few steps by our trainer (a run folder)."""
    from omniforge_training.train_diffusion import DiffusionTrainConfig, train_diffusion

    run = tmp_path_factory.mktemp("tiny-diffusion")
    train_diffusion(DiffusionTrainConfig(data=str(tiny_images), clip=str(tiny_clip_run), out=str(run), image_size=16,
                                         channels=(16, 32), batch_size=16, max_steps=12, eval_interval=6,
                                         checkpoint_interval=6, eval_concepts=8, eval_steps=4, threads=1),
                    progress=False, log=lambda m: None)
    return run


@pytest.fixture(scope="session")
def tiny_diffusion_bundle(tmp_path_factory, tiny_diffusion_run, tiny_clip_run) -> Path:
    """The tiny U-Net exported with its sampler checked."""
    from omniforge_training.export_diffusion import export_diffusion_bundle

    out = tmp_path_factory.mktemp("tiny-diffusion-bundle")
    export_diffusion_bundle(tiny_diffusion_run, tiny_clip_run, out, name="tiny-diffusion", version="1",
                            log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def image_service(tiny_diffusion_bundle, tiny_clip_bundle, tmp_path_factory):
    """The image service as a real process: the tiny U-Net, and the tiny CLIP's image tower for Encode."""
    port, metrics_port = free_port(), free_port()
    logs = tmp_path_factory.mktemp("logs")
    proc = Proc("omniforge_image.server", {"OMNIFORGE_IMAGE_BUNDLE": str(tiny_diffusion_bundle),
                                           "OMNIFORGE_IMAGE_ENCODER_BUNDLE": str(tiny_clip_bundle),
                                           "OMNIFORGE_IMAGE_PORT": str(port), "OMNIFORGE_IMAGE_THREADS": "1",
                                           "OMNIFORGE_IMAGE_METRICS_PORT": str(metrics_port),
                                           "OMNIFORGE_IMAGE_GRACE_SECONDS": "1"}, logs / "image.log").start()
    proc.address = f"127.0.0.1:{port}"
    proc.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    wait_for(lambda: grpc_serving(proc.address), timeout=60, what=f"image service on {proc.address} (log {proc.log})")
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def vision_gateway(fusion_service, image_service, tmp_path_factory):
    """A gateway in front of the fusion and image services (text not configured)."""
    import httpx

    port = free_port()
    log = tmp_path_factory.mktemp("logs") / "vision-gateway.log"
    proc = Proc("omniforge_gateway.app", {"OMNIFORGE_GATEWAY_PORT": str(port), "OMNIFORGE_GATEWAY_TEXT_ADDRESS": "",
                                          "OMNIFORGE_GATEWAY_FUSION_ADDRESS": fusion_service.address,
                                          "OMNIFORGE_GATEWAY_IMAGE_ADDRESS": image_service.address,
                                          "OMNIFORGE_GATEWAY_AUDIO_ADDRESS": "", "OMNIFORGE_GATEWAY_MAX_IMAGE_MB": "2"}, log).start()
    proc.url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{proc.url}/readyz").status_code == 200, what=f"gateway (log {log})")
    yield proc
    proc.stop()


# ---- audio: the committed speech starters, exported, behind a real audio service and gateway ----

@pytest.fixture(scope="session")
def speech_bundles(tmp_path_factory):
    """The committed recognizer (with its word LM) and voice, exported as `omniforge bootstrap` does."""
    from omniforge_training.export_asr import export_asr_bundle
    from omniforge_training.export_tts import export_tts_bundle
    from omniforge_training.starter.speech import STARTER_ASR_DIR, STARTER_TTS_DIR, listed_heldout
    import json as _json

    if not (STARTER_ASR_DIR / "manifest.json").exists() or not (STARTER_TTS_DIR / "manifest.json").exists():
        pytest.skip("no committed speech starters")
    root = tmp_path_factory.mktemp("speech-bundles")
    held = listed_heldout(STARTER_ASR_DIR)
    asr = export_asr_bundle(STARTER_ASR_DIR, root / "asr", name="asr-starter", version="1", heldout=held,
                            log=lambda m: None)
    m = _json.loads((STARTER_TTS_DIR / "manifest.json").read_text())
    tts = export_tts_bundle(STARTER_TTS_DIR / "acoustic", STARTER_TTS_DIR / "vocoder", root / "tts",
                            name="tts-starter", version="1", voices=m["voices"], log=lambda m: None)
    return asr.path, tts.path


@pytest.fixture(scope="module")            # stopped once its module is done: the later tests run on a quiet machine
def audio_service(speech_bundles, tmp_path_factory):
    asr, tts = speech_bundles
    port, metrics_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("logs") / "audio.log"
    proc = Proc("omniforge_audio.server", {"OMNIFORGE_AUDIO_BUNDLE": str(asr), "OMNIFORGE_AUDIO_TTS_BUNDLE": str(tts),
                                           "OMNIFORGE_AUDIO_PORT": str(port), "OMNIFORGE_AUDIO_THREADS": "1",
                                           "OMNIFORGE_AUDIO_METRICS_PORT": str(metrics_port),
                                           "OMNIFORGE_AUDIO_MAX_AUDIO_SECONDS": "120",
                                           "OMNIFORGE_AUDIO_GRACE_SECONDS": "1", "OMNIFORGE_LOG_FORMAT": "json"},
                log).start()
    proc.address = f"127.0.0.1:{port}"
    proc.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    wait_for(lambda: grpc_serving(proc.address), timeout=120, what=f"audio service on {proc.address} (log {log})")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")            # stopped once its module is done: the later tests run on a quiet machine
def audio_gateway(audio_service, tmp_path_factory):
    import httpx

    port = free_port()
    log = tmp_path_factory.mktemp("logs") / "gateway-audio.log"
    proc = Proc("omniforge_gateway.app", {"OMNIFORGE_GATEWAY_PORT": str(port), "OMNIFORGE_GATEWAY_TEXT_ADDRESS": "",
                                          "OMNIFORGE_GATEWAY_FUSION_ADDRESS": "", "OMNIFORGE_GATEWAY_IMAGE_ADDRESS": "",
                                          "OMNIFORGE_GATEWAY_AUDIO_ADDRESS": audio_service.address,
                                          "OMNIFORGE_GATEWAY_RETRY_AFTER_S": "1", "OMNIFORGE_LOG_FORMAT": "json"},
                log).start()
    proc.url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{proc.url}/readyz").status_code == 200, what=f"gateway (log {log})")
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def tiny_speech(tmp_path_factory) -> Path:
    """24 sentences of the starter speech corpus, synthesised by our builder (every engine)."""
    from omniforge_training.data.starter_speech import build_starter_speech

    out = tmp_path_factory.mktemp("tiny-speech")
    build_starter_speech(out, n_wiki=12, n_everyday=12, workers=1, progress=False, log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def tiny_audio_tower_run(tmp_path_factory, tiny_speech, tiny_clip_bundle) -> Path:
    """The audio tower on the committed recognizer, trained briefly into the tiny CLIP's space."""
    from omniforge_training.starter.speech import STARTER_ASR_DIR
    from omniforge_training.train_audio_align import AudioAlignConfig, train_audio_align

    if not (STARTER_ASR_DIR / "manifest.json").exists():
        pytest.skip("no committed recognizer")
    out = tmp_path_factory.mktemp("tiny-tower")
    train_audio_align(AudioAlignConfig(data=[str(tiny_speech)], space=str(tiny_clip_bundle), asr=str(STARTER_ASR_DIR),
                                       out=str(out), tune_layers=1, max_steps=40, batch_seconds=60, lr=2e-3,
                                       warmup_steps=5, eval_interval=20, checkpoint_interval=20, threads=1),
                      progress=False, log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def tiny_audio_tower_bundle(tmp_path_factory, tiny_audio_tower_run) -> Path:
    from omniforge_training.export_audio_tower import export_audio_tower_bundle

    out = tmp_path_factory.mktemp("tiny-tower-bundle")
    export_audio_tower_bundle(tiny_audio_tower_run, out, name="tiny-audio-tower", version="1", log=lambda m: None)
    return out


@pytest.fixture(scope="module")
def full_gateway(text_service, fusion_service, image_service, audio_service, tmp_path_factory):
    """A gateway in front of all four model services."""
    import httpx

    port = free_port()
    log = tmp_path_factory.mktemp("logs") / "gateway-full.log"
    proc = Proc("omniforge_gateway.app", {
        "OMNIFORGE_GATEWAY_PORT": str(port), "OMNIFORGE_GATEWAY_TEXT_ADDRESS": text_service.address,
        "OMNIFORGE_GATEWAY_FUSION_ADDRESS": fusion_service.address,
        "OMNIFORGE_GATEWAY_IMAGE_ADDRESS": image_service.address,
        "OMNIFORGE_GATEWAY_AUDIO_ADDRESS": audio_service.address}, log).start()
    proc.url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{proc.url}/readyz").status_code == 200, timeout=60, what=f"gateway (log {log})")
    yield proc
    proc.stop()
