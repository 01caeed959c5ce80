"""`omniforge export onnx | clip | caption | triton`: trained runs to served bundles."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from omniforge_shared.settings import omniforge_home

from .context import console, fail, open_registry

app = typer.Typer(help="Export a trained model.", no_args_is_help=True)


@app.command("onnx")
def export_onnx_cmd(run_dir: Path = typer.Argument(..., help="training run folder"),
                    name: str = typer.Option(..., help="model name in the registry"),
                    version: Optional[str] = typer.Option(None, help="default: next free number"),
                    out: Optional[Path] = typer.Option(None, help="bundle folder"),
                    int8: bool = typer.Option(False, help="also write an INT8 dynamically quantized graph"),
                    eval_text: Optional[Path] = typer.Option(None, help="text to measure the INT8 perplexity change on"),
                    register: bool = typer.Option(True, help="register the bundle (stage: staging)"),
                    promote: bool = typer.Option(False, help="put it in production")):
    """Export a trained text model to an ONNX bundle (KV cache, parity-checked)."""
    import numpy as np

    from omniforge_shared.tokenizer import load_tokenizer
    from omniforge_training.export_onnx import export_bundle

    registry = open_registry() if register else None
    version = version or (registry.next_version(name) if registry else "1")
    out = out or omniforge_home() / "build" / f"{name}-{version}"
    eval_tokens = None
    if eval_text is not None:
        eval_tokens = np.array(load_tokenizer(run_dir / "tokenizer.json").encode(eval_text.read_text()))
    try:
        bundle = export_bundle(run_dir, out, name=name, version=version, int8=int8, eval_tokens=eval_tokens,
                               log=console.print)
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        fail(str(e))
    if registry:
        info = registry.register_bundle(bundle.path, stage="production" if promote else "staging")
        console.print(f"registered {info.name}:{info.version} ({info.stage})")


def _register(bundle, promote: bool) -> None:
    info = open_registry().register_bundle(bundle.path, stage="production" if promote else "staging")
    console.print(f"registered {info.name}:{info.version} ({info.stage})")


@app.command("clip")
def export_clip_cmd(run_dir: Path = typer.Argument(..., help="a `train clip` run folder"),
                    name: str = typer.Option(..., help="model name in the registry"),
                    data: Path = typer.Option(Path("data/starter-images"), help="images to check parity on"),
                    version: Optional[str] = typer.Option(None), register: bool = typer.Option(True),
                    promote: bool = typer.Option(False, help="put it in production")):
    """Export a CLIP run to an embedding bundle (image and text ONNX graphs, parity-checked)."""
    from omniforge_training.data.image_text import load_image_text
    from omniforge_training.export_clip import export_clip_bundle

    version = version or (open_registry().next_version(name) if register else "1")
    try:
        bundle = export_clip_bundle(run_dir, omniforge_home() / "build" / f"{name}-{version}", name=name,
                                    version=version, sample_images=load_image_text(data).images[:8], log=console.print)
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        fail(str(e))
    if register:
        _register(bundle, promote)


@app.command("caption")
def export_caption_cmd(run_dir: Path = typer.Argument(..., help="a `train caption` run folder"),
                       clip: Path = typer.Option(..., help="the CLIP run (or bundle) the captioner was trained on"),
                       name: str = typer.Option(..., help="model name in the registry"),
                       data: Path = typer.Option(Path("data/starter-images"), help="images to check parity on"),
                       version: Optional[str] = typer.Option(None), register: bool = typer.Option(True),
                       promote: bool = typer.Option(False, help="put it in production")):
    """Export a captioner run: prefix encoder + KV-cache decoder on embeddings, parity-checked."""
    from omniforge_training.data.image_text import load_image_text
    from omniforge_training.export_caption import export_caption_bundle

    version = version or (open_registry().next_version(name) if register else "1")
    try:
        bundle = export_caption_bundle(run_dir, clip, omniforge_home() / "build" / f"{name}-{version}", name=name,
                                       version=version, sample_images=load_image_text(data).images[:4],
                                       log=console.print)
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        fail(str(e))
    if register:
        _register(bundle, promote)


@app.command("diffusion")
def export_diffusion_cmd(run_dir: Path = typer.Argument(..., help="a `train diffusion` run folder"),
                         clip: Path = typer.Option(..., help="the CLIP the U-Net was conditioned on"),
                         name: str = typer.Option(..., help="model name in the registry"),
                         version: Optional[str] = typer.Option(None), register: bool = typer.Option(True),
                         promote: bool = typer.Option(False, help="put it in production")):
    """Export a text-to-image run: the U-Net and the prompt encoder, the numpy sampler checked against torch."""
    from omniforge_training.export_diffusion import export_diffusion_bundle

    version = version or (open_registry().next_version(name) if register else "1")
    try:
        bundle = export_diffusion_bundle(run_dir, clip, omniforge_home() / "build" / f"{name}-{version}", name=name,
                                         version=version, log=console.print)
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        fail(str(e))
    if register:
        _register(bundle, promote)


@app.command("asr")
def export_asr_cmd(run_dir: Path = typer.Argument(..., help="a `train asr` run folder"),
                   name: str = typer.Option(..., help="model name in the registry"),
                   data: Optional[Path] = typer.Option(Path("data/starter-speech"),
                                                       help="its speech dataset: the LM leaves out its val/test sentences"),
                   lm: bool = typer.Option(True, "--lm/--no-lm", help="build the word trigram for beam search"),
                   version: Optional[str] = typer.Option(None), register: bool = typer.Option(True),
                   promote: bool = typer.Option(False, help="put it in production")):
    """Export a recognizer run: the conformer-CTC graph (parity-checked), its LM and lexicon."""
    from omniforge_training.export_asr import export_asr_bundle
    from omniforge_training.starter.speech import HELDOUT_FILE, lm_heldout

    version = version or (open_registry().next_version(name) if register else "1")
    try:
        held, source = lm_heldout(data, run_dir)
        if lm and not source:
            console.print(f"[yellow]no dataset at {data} and no {HELDOUT_FILE} in {run_dir}: the LM cannot leave "
                          "out the held-out sentences, so its test WER will read too low[/yellow]")
        bundle = export_asr_bundle(run_dir, omniforge_home() / "build" / f"{name}-{version}", name=name,
                                   version=version, heldout=held, with_lm=lm, log=console.print)
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        fail(str(e))
    if register:
        _register(bundle, promote)


@app.command("tts")
def export_tts_cmd(run_dir: Path = typer.Argument(..., help="a `train tts` run folder"),
                   vocoder: Path = typer.Option(..., help="a `train vocoder` run folder"),
                   name: str = typer.Option(..., help="model name in the registry"),
                   version: Optional[str] = typer.Option(None), register: bool = typer.Option(True),
                   promote: bool = typer.Option(False, help="put it in production")):
    """Export a voice: acoustic encoder and decoder, vocoder (each parity-checked), its voices."""
    from omniforge_training.export_tts import export_tts_bundle

    version = version or (open_registry().next_version(name) if register else "1")
    try:
        bundle = export_tts_bundle(run_dir, vocoder, omniforge_home() / "build" / f"{name}-{version}", name=name,
                                   version=version, log=console.print)
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        fail(str(e))
    if register:
        _register(bundle, promote)


@app.command("triton")
def export_triton_cmd(model: str = typer.Argument(..., help="registered model name, or a bundle folder"),
                      repo: Path = typer.Option(Path("triton-models"), help="Triton model repository"),
                      version: Optional[str] = typer.Option(None, help="registry version (default: production)"),
                      runtime: str = typer.Option("onnxruntime", help="onnxruntime | python (Python backend)"),
                      kind: str = typer.Option("KIND_GPU", help="KIND_GPU | KIND_CPU"),
                      instances: int = typer.Option(1, help="model instances"),
                      max_batch_size: int = typer.Option(16)):
    """Write a Triton model repository (config.pbtxt + <version>/model.onnx) for a text model."""
    from omniforge_training.export_triton import export_triton

    path = Path(model)
    bundle_dir = path if path.is_dir() else open_registry().bundle(model, version).path
    try:
        model_dir = export_triton(bundle_dir, repo, runtime=runtime, kind=kind, instances=instances,
                                  max_batch_size=max_batch_size)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    console.print(f"wrote {model_dir}/config.pbtxt and {', '.join(p.name for p in model_dir.iterdir() if p.is_dir())}/")
