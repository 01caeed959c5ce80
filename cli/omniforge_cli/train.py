"""`omniforge train text | starter`: train in this process (the job commands are in jobs.py)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from .context import err, fail, open_registry

app = typer.Typer(help="Train a model.", no_args_is_help=True)


@app.command("text")
def train_text_cmd(
    data: Optional[str] = typer.Option(None, help="text file or token dataset folder"),
    val_data: Optional[str] = typer.Option(None, help="validation text file (default: last 10% of --data)"),
    out: Optional[str] = typer.Option(None, help="run folder (checkpoints, weights, metrics)"),
    config: Optional[Path] = typer.Option(None, help="JSON or TOML file with any of these settings"),
    tokenizer: Optional[str] = typer.Option(None, help="char | bpe"),
    vocab_size: Optional[int] = typer.Option(None),
    n_layer: Optional[int] = typer.Option(None), n_head: Optional[int] = typer.Option(None),
    n_embd: Optional[int] = typer.Option(None), block_size: Optional[int] = typer.Option(None),
    batch_size: Optional[int] = typer.Option(None), grad_accum: Optional[int] = typer.Option(None),
    max_iters: Optional[int] = typer.Option(None), lr: Optional[float] = typer.Option(None),
    min_lr: Optional[float] = typer.Option(None), warmup_iters: Optional[int] = typer.Option(None),
    weight_decay: Optional[float] = typer.Option(None), grad_clip: Optional[float] = typer.Option(None),
    dropout: Optional[float] = typer.Option(None), seed: Optional[int] = typer.Option(None),
    eval_interval: Optional[int] = typer.Option(None), checkpoint_interval: Optional[int] = typer.Option(None),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda"),
    threads: Optional[int] = typer.Option(None, help="torch threads (0 = all cores)"),
    resume: Optional[bool] = typer.Option(None, "--resume/--no-resume", help="continue from out/ckpt.pt"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    """Train a GPT text model; prints one JSON line (val_loss, train_loss, tokens_per_s, wall_s)."""
    from omniforge_training.data.ingest import DataError
    from omniforge_training.train_text import TrainConfig, train_text

    flags = {k: v for k, v in dict(
        data=data, val_data=val_data, out=out, tokenizer=tokenizer, vocab_size=vocab_size, n_layer=n_layer,
        n_head=n_head, n_embd=n_embd, block_size=block_size, batch_size=batch_size, grad_accum=grad_accum,
        max_iters=max_iters, lr=lr, min_lr=min_lr, warmup_iters=warmup_iters, weight_decay=weight_decay,
        grad_clip=grad_clip, dropout=dropout, seed=seed, eval_interval=eval_interval,
        checkpoint_interval=checkpoint_interval, device=device, threads=threads, resume=resume).items()
        if v is not None}
    try:
        cfg = TrainConfig.from_file(config, **flags) if config else TrainConfig(**flags)
        if not cfg.data:
            fail("give --data (a text file or a dataset folder) or a --config that sets it")
        summary = train_text(cfg, progress=progress, log=lambda m: err.print(m, highlight=False))
    except (DataError, ValueError) as e:
        fail(str(e))
    if os.environ.get("RANK", "0") == "0":   # under torchrun, one JSON line from rank 0
        print(json.dumps(summary), flush=True)


@app.command("starter")
def train_starter(data: Path = typer.Option(Path("data/starter-corpus"), help="built by `omniforge data starter`"),
                  out: Path = typer.Option(Path("runs/text-starter"), help="run folder"),
                  max_iters: Optional[int] = typer.Option(None, help="override the recipe's step count"),
                  package: Optional[str] = typer.Option(None, help="write the result as the committed starter, "
                                                                   "with this version")):
    """Train the starter text model with the recipe it was trained with (resumable)."""
    from omniforge_training.data.ingest import DataError
    from omniforge_training.starter import STARTER_RECIPE
    from omniforge_training.train_text import TrainConfig, train_text

    recipe = dict(STARTER_RECIPE, **({"max_iters": max_iters} if max_iters else {}))
    try:
        summary = train_text(TrainConfig(data=str(data), out=str(out), **recipe),
                             log=lambda m: err.print(m, highlight=False))
    except (DataError, ValueError) as e:
        fail(str(e))
    if package:
        from omniforge_training.starter import STARTER_TEXT_DIR, package_starter

        package_starter(out, data, version=package)
        err.print(f"starter written to {STARTER_TEXT_DIR}")
    print(json.dumps(summary), flush=True)


@app.command("clip")
def train_clip_cmd(
    data: Path = typer.Option(Path("data/starter-images"), help="image-text dataset folder "
                              "(`omniforge data starter-images` or `omniforge data images`)"),
    out: Path = typer.Option(Path("runs/clip"), help="run folder (checkpoints, weights, summary)"),
    image_size: int = typer.Option(64), patch_size: int = typer.Option(8), n_layer: int = typer.Option(6),
    n_head: int = typer.Option(4), n_embd: int = typer.Option(128), embed_dim: int = typer.Option(256),
    batch_size: int = typer.Option(256), max_steps: int = typer.Option(2400), lr: float = typer.Option(1.5e-3),
    warmup_steps: int = typer.Option(150), eval_interval: int = typer.Option(200),
    checkpoint_interval: int = typer.Option(100), seed: int = typer.Option(1337),
    threads: int = typer.Option(2, help="torch threads"),
    text_tower: str = typer.Option("minilm", help="minilm (frozen, pretrained) | own (ours, trained with the images)"),
    init: Optional[Path] = typer.Option(None, help="a CLIP run, starter or bundle folder of the same shape to start "
                                        "from (e.g. training/omniforge_training/starter/clip)"),
    lock_text: bool = typer.Option(False, "--lock-text/--no-lock-text", help="keep the text projection fixed: the "
                                   "shared space stays where the audio tower and diffusion models expect it"),
    ema_decay: float = typer.Option(0.0, help="keep a moving average of the weights with this decay (e.g. 0.998) "
                                    "and make it the model; 0: off"),
    flat_p: float = typer.Option(0.2, min=0.0, max=1.0, help="how often an image loses its shading (posterize) and, "
                                 "independently, its fine line work (median filter); 0: never"),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="continue from out/checkpoints/last.pt"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    package: Optional[str] = typer.Option(None, help="write the result as the committed CLIP starter, with this version"),
):
    """Train a CLIP image tower against the frozen MiniLM text tower; prints the retrieval summary.
    The defaults are the starter recipe."""
    from omniforge_training.data.ingest import DataError
    from omniforge_training.train_clip import CLIPTrainConfig, train_clip

    cfg = CLIPTrainConfig(data=str(data), out=str(out), image_size=image_size, patch_size=patch_size, n_layer=n_layer,
                          n_head=n_head, n_embd=n_embd, embed_dim=embed_dim, batch_size=batch_size,
                          max_steps=max_steps, lr=lr, warmup_steps=warmup_steps, eval_interval=eval_interval,
                          checkpoint_interval=checkpoint_interval, seed=seed, threads=threads, resume=resume,
                          text_tower=text_tower, init=str(init or ""), lock_text=lock_text,
                          ema_decay=ema_decay, flat_p=flat_p)
    try:
        summary = train_clip(cfg, progress=progress, log=lambda m: err.print(m, highlight=False))
    except (DataError, ValueError) as e:
        fail(str(e))
    if package:
        from omniforge_training.starter.vision import STARTER_CLIP_DIR, package_clip_starter

        package_clip_starter(out, data, version=package)
        err.print(f"starter written to {STARTER_CLIP_DIR}")
    print(json.dumps({k: summary[k] for k in ("steps", "wall_s", "retrieval", "params")}), flush=True)


@app.command("caption")
def train_caption_cmd(
    data: Path = typer.Option(Path("data/starter-images"), help="image-text dataset folder"),
    clip: Path = typer.Option(..., help="a CLIP run, starter or bundle folder (config.json + model.safetensors)"),
    tokenizer: Optional[Path] = typer.Option(None, help="BPE tokenizer.json (default: the starter text model's)"),
    out: Path = typer.Option(Path("runs/caption"), help="run folder"),
    n_layer: int = typer.Option(3), n_head: int = typer.Option(4), n_embd: int = typer.Option(256),
    batch_size: int = typer.Option(128), max_steps: int = typer.Option(1500), lr: float = typer.Option(1e-3),
    eval_interval: int = typer.Option(250), seed: int = typer.Option(1337), threads: int = typer.Option(2),
    resume: bool = typer.Option(True, "--resume/--no-resume"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    package: Optional[str] = typer.Option(None, help="write the result as the committed captioner starter"),
):
    """Train a prefix captioner on a CLIP image tower (frozen); prints the caption quality summary."""
    from omniforge_training.data.ingest import DataError
    from omniforge_training.starter import STARTER_TEXT_DIR
    from omniforge_training.train_caption import CaptionTrainConfig, train_caption

    cfg = CaptionTrainConfig(data=str(data), clip=str(clip), tokenizer=str(tokenizer or STARTER_TEXT_DIR / "tokenizer.json"),
                             out=str(out), n_layer=n_layer, n_head=n_head, n_embd=n_embd, batch_size=batch_size,
                             max_steps=max_steps, lr=lr, eval_interval=eval_interval, seed=seed, threads=threads,
                             resume=resume)
    try:
        summary = train_caption(cfg, progress=progress, log=lambda m: err.print(m, highlight=False))
    except (DataError, ValueError) as e:
        fail(str(e))
    if package:
        from omniforge_training.starter.vision import STARTER_CAPTION_DIR, package_caption_starter

        package_caption_starter(out, data, version=package)
        err.print(f"starter written to {STARTER_CAPTION_DIR}")
    print(json.dumps({k: summary[k] for k in ("steps", "wall_s", "quality", "params")}), flush=True)


@app.command("diffusion")
def train_diffusion_cmd(
    data: Path = typer.Option(Path("data/starter-images"), help="image-text dataset folder"),
    clip: Path = typer.Option(..., help="the CLIP (run, starter or bundle folder) whose text tower conditions"),
    out: Path = typer.Option(Path("runs/diffusion"), help="run folder"),
    image_size: int = typer.Option(64), patch: int = typer.Option(2, help="pixel blocks folded into channels"),
    channels: str = typer.Option("32,64,128,128", help="U-Net widths per level"),
    batch_size: int = typer.Option(64), max_steps: int = typer.Option(4000), lr: float = typer.Option(1e-3),
    warmup_steps: int = typer.Option(200, help="steps of linear learning-rate warm-up before the cosine decay"),
    eval_interval: int = typer.Option(500), seed: int = typer.Option(1337), threads: int = typer.Option(2),
    init: Optional[Path] = typer.Option(None, help="start from these weights, e.g. the committed starter "
                                                    "training/omniforge_training/starter/diffusion"),
    device: str = typer.Option("auto", help="auto (cuda where there is one, with bf16 autocast), cpu or cuda[:N]"),
    resume: bool = typer.Option(True, "--resume/--no-resume"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    package: Optional[str] = typer.Option(None, help="write the result as the committed text-to-image starter"),
):
    """Train the text-to-image U-Net; prints the quality summary (samples.png in the run folder).
    The defaults are the starter recipe."""
    from omniforge_training.data.ingest import DataError
    from omniforge_training.train_diffusion import DiffusionTrainConfig, train_diffusion

    try:
        widths = tuple(int(c) for c in channels.split(","))
    except ValueError:
        fail(f"--channels {channels!r} is not a comma-separated list of integers, e.g. 32,64,128")
    cfg = DiffusionTrainConfig(data=str(data), clip=str(clip), out=str(out), image_size=image_size, patch=patch, channels=widths,
                               batch_size=batch_size, max_steps=max_steps, lr=lr, warmup_steps=warmup_steps,
                               eval_interval=eval_interval, seed=seed, threads=threads, resume=resume,
                               init=str(init or ""), device=device)
    try:
        summary = train_diffusion(cfg, progress=progress, log=lambda m: err.print(m, highlight=False))
    except (DataError, ValueError) as e:
        fail(str(e))
    if package:
        from omniforge_training.starter.vision import STARTER_DIFFUSION_DIR, package_diffusion_starter

        package_diffusion_starter(out, data, version=package)
        err.print(f"starter written to {STARTER_DIFFUSION_DIR}")
    print(json.dumps({k: summary[k] for k in ("steps", "wall_s", "quality", "params")}), flush=True)


@app.command("asr")
def train_asr_cmd(
    data: Path = typer.Option(Path("data/starter-speech"), help="speech dataset folder"),
    out: Path = typer.Option(Path("runs/asr"), help="run folder"),
    d_model: int = typer.Option(144), n_layers: int = typer.Option(8), n_heads: int = typer.Option(4),
    batch_seconds: float = typer.Option(120.0, help="padded audio seconds per batch"),
    max_steps: int = typer.Option(3000), lr: float = typer.Option(2e-3),
    augment: bool = typer.Option(True, "--augment/--no-augment"),
    eval_interval: int = typer.Option(250), seed: int = typer.Option(1337), threads: int = typer.Option(2),
    resume: bool = typer.Option(True, "--resume/--no-resume"),
    init: Optional[Path] = typer.Option(None, help="start from these weights, e.g. the committed starter "
                                                    "(training/omniforge_training/starter/asr) to train it further"),
    extra_data: list[Path] = typer.Option([], help="another speech dataset whose train split joins training "
                                          "(repeatable), e.g. data/festival-speech"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    """Train the conformer-CTC recognizer; prints WER/CER on the test split (held-out voice apart)."""
    from omniforge_training.data.ingest import DataError
    from omniforge_training.train_asr import ASRTrainConfig, train_asr

    cfg = ASRTrainConfig(data=str(data), out=str(out), d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                         batch_seconds=batch_seconds, max_steps=max_steps, lr=lr, augment=augment,
                         eval_interval=eval_interval, seed=seed, threads=threads, resume=resume,
                         init=str(init) if init else "", extra_data=[str(p) for p in extra_data])
    try:
        summary = train_asr(cfg, progress=progress, log=lambda m: err.print(m, highlight=False))
    except (DataError, ValueError) as e:
        fail(str(e))
    print(json.dumps({k: summary[k] for k in ("steps", "wall_s", "quality", "params")}), flush=True)


@app.command("tts")
def train_tts_cmd(
    data: Path = typer.Option(Path("data/starter-speech"), help="speech dataset folder with teacher durations"),
    out: Path = typer.Option(Path("runs/tts"), help="run folder"),
    voices: str = typer.Option("joe", help="comma-separated voices (speakers) to learn"),
    reference_voice: str = typer.Option("joe", help="voice with alignments; its recordings of the same sentences "
                                        "time the voices that have none (by DTW)"),
    init: Optional[Path] = typer.Option(None, help="start from this trained acoustic model (a run folder or "
                                        "training/omniforge_training/starter/tts/acoustic)"),
    d_model: int = typer.Option(192), enc_layers: int = typer.Option(4), dec_layers: int = typer.Option(4),
    batch_frames: int = typer.Option(6000, help="mel frames per batch"),
    max_steps: int = typer.Option(4000), lr: float = typer.Option(1e-3),
    eval_interval: int = typer.Option(250), seed: int = typer.Option(1337), threads: int = typer.Option(2),
    flite_timing: bool = typer.Option(False, "--flite-timing/--no-flite-timing",
                                      help="time flite's recordings by flite's own phone times, not by DTW"),
    resume: bool = typer.Option(True, "--resume/--no-resume"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    """Train the FastSpeech-style acoustic model (text -> mel) on voices with durations."""
    from omniforge_training.data.ingest import DataError
    from omniforge_training.train_tts import TTSTrainConfig, train_tts

    cfg = TTSTrainConfig(data=str(data), out=str(out), voices=[v.strip() for v in voices.split(",") if v.strip()],
                         reference_voice=reference_voice, init=str(init or ""), d_model=d_model,
                         enc_layers=enc_layers, dec_layers=dec_layers, batch_frames=batch_frames, max_steps=max_steps,
                         lr=lr, eval_interval=eval_interval, seed=seed, threads=threads, resume=resume,
                         flite_timing=flite_timing)
    try:
        summary = train_tts(cfg, progress=progress, log=lambda m: err.print(m, highlight=False))
    except (DataError, ValueError) as e:
        fail(str(e))
    print(json.dumps({k: summary[k] for k in ("steps", "wall_s", "quality", "params")}), flush=True)


@app.command("calibrate-tts")
def calibrate_tts_cmd(run: Path = typer.Argument(..., help="a `train tts` run folder (with its feature cache)"),
                      threads: int = typer.Option(2)):
    """Measure each voice's duration scale (teacher frames over predicted, on the training
    sentences) into the run's config.json, so the exported voice speaks at its teacher's rate
    (`train tts` does this itself when it finishes; this is for runs trained before it did)."""
    from omniforge_training.train_tts import calibrate_durations

    try:
        scales = calibrate_durations(run, threads=threads, log=lambda m: err.print(m, highlight=False))
    except FileNotFoundError as e:
        fail(str(e))
    print(json.dumps({"duration_scale": scales}), flush=True)


@app.command("vocoder")
def train_vocoder_cmd(
    data: Path = typer.Option(Path("data/starter-speech"), help="speech dataset folder (22,050 Hz)"),
    out: Path = typer.Option(Path("runs/vocoder"), help="run folder"),
    voices: str = typer.Option("", help="comma-separated voices (empty: every training voice)"),
    init: Optional[Path] = typer.Option(None, help="start from this trained vocoder (a run folder or "
                                        "training/omniforge_training/starter/tts/vocoder)"),
    dim: int = typer.Option(256), layers: int = typer.Option(8),
    batch_size: int = typer.Option(16), segment_frames: int = typer.Option(48),
    max_steps: int = typer.Option(6000), lr: float = typer.Option(1e-3),
    eval_interval: int = typer.Option(500), seed: int = typer.Option(1337), threads: int = typer.Option(2),
    gta: Optional[Path] = typer.Option(None, help="fine-tune on this acoustic model's teacher-forced mels (a `train "
                                       "tts` run or training/omniforge_training/starter/tts/acoustic)"),
    gta_share: float = typer.Option(0.75, help="with --gta: the share of each batch that is its mels"),
    resume: bool = typer.Option(True, "--resume/--no-resume"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    """Train the Fourier-head vocoder (mel -> waveform)."""
    from omniforge_training.data.ingest import DataError
    from omniforge_training.train_vocoder import VocoderTrainConfig, train_vocoder

    cfg = VocoderTrainConfig(data=str(data), out=str(out), voices=[v.strip() for v in voices.split(",") if v.strip()],
                             init=str(init or ""), dim=dim, layers=layers, batch_size=batch_size,
                             segment_frames=segment_frames, max_steps=max_steps, lr=lr, eval_interval=eval_interval,
                             seed=seed, threads=threads, resume=resume, gta=str(gta or ""), gta_share=gta_share)
    try:
        summary = train_vocoder(cfg, progress=progress, log=lambda m: err.print(m, highlight=False))
    except (DataError, ValueError) as e:
        fail(str(e))
    print(json.dumps({k: summary[k] for k in ("steps", "wall_s", "quality", "params")}), flush=True)


@app.command("audio-align")
def train_audio_align_cmd(
    data: str = typer.Option("data/starter-speech,data/starter-spoken-captions",
                             help="comma-separated speech dataset folders"),
    space: Optional[Path] = typer.Option(None, help="embedding bundle folder whose space to join "
                                                      "(default: the registry's production clip-starter)"),
    asr: Path = typer.Option(Path("training/omniforge_training/starter/asr"), help="the recognizer to start from"),
    images: Optional[Path] = typer.Option(Path("data/starter-images"), help="image-text set for the spoken image "
                                                                            "search test"),
    out: Path = typer.Option(Path("runs/audio-align"), help="run folder"),
    head_layers: int = typer.Option(1), tune_layers: int = typer.Option(2),
    batch_seconds: float = typer.Option(200.0, help="padded audio seconds per batch"),
    max_steps: int = typer.Option(800), lr: float = typer.Option(1e-3),
    distill_weight: float = typer.Option(1.0, help="weight of the cosine to the sentence's own text vector"),
    eval_interval: int = typer.Option(200), seed: int = typer.Option(1337), threads: int = typer.Option(2),
    resume: bool = typer.Option(True, "--resume/--no-resume"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    """Train the audio tower: speech into the shared space (R@1 beside the recognizer + text tower cascade)."""
    from omniforge_training.data.ingest import DataError
    from omniforge_training.train_audio_align import AudioAlignConfig, train_audio_align

    if space is None:
        from omniforge_training.starter.vision import STARTER_CLIP_NAME

        space = open_registry().bundle(STARTER_CLIP_NAME).path
    cfg = AudioAlignConfig(data=[d.strip() for d in data.split(",") if d.strip()], space=str(space), asr=str(asr),
                           images=str(images) if images and images.exists() else "", out=str(out),
                           head_layers=head_layers, tune_layers=tune_layers, batch_seconds=batch_seconds,
                           max_steps=max_steps, lr=lr, distill_weight=distill_weight, eval_interval=eval_interval,
                           seed=seed, threads=threads, resume=resume)
    try:
        summary = train_audio_align(cfg, progress=progress, log=lambda m: err.print(m, highlight=False))
    except (DataError, ValueError) as e:
        fail(str(e))
    print(json.dumps({k: summary[k] for k in ("steps", "wall_s", "quality", "params")}), flush=True)


@app.command("package-audio-tower")
def package_audio_tower_cmd(version: str = typer.Option(..., help="starter version to write"),
                            run: Path = typer.Option(Path("runs/audio-align"))):
    """Write a trained audio tower as the committed starter (fp16 safetensors + manifest)."""
    from omniforge_training.starter.speech import STARTER_AUDIO_TOWER_DIR, package_audio_tower_starter

    package_audio_tower_starter(run, version=version)
    err.print(f"audio tower starter written to {STARTER_AUDIO_TOWER_DIR}")


@app.command("package-speech")
def package_speech_cmd(version: str = typer.Option(..., help="starter version to write"),
                       asr: Path = typer.Option(Path("runs/asr")), tts: Path = typer.Option(Path("runs/tts")),
                       vocoder: Path = typer.Option(Path("runs/vocoder")),
                       data: Path = typer.Option(Path("data/starter-speech"), help="the dataset they were trained on"),
                       asr_eval: Optional[Path] = typer.Option(None, help="`omniforge eval speech --out` JSON of the recognizer"),
                       tts_eval: Optional[Path] = typer.Option(None, help="`omniforge eval speech --tts --out` JSON of the voice")):
    """Write trained speech runs as the committed starters (fp16 safetensors + manifests)."""
    from omniforge_training.starter.speech import (STARTER_ASR_DIR, STARTER_TTS_DIR, package_asr_starter,
                                                   package_tts_starter)

    if (asr / "model.safetensors").exists():
        package_asr_starter(asr, data, version=version, evaluation=json.loads(asr_eval.read_text()) if asr_eval else None)
        err.print(f"recognizer starter written to {STARTER_ASR_DIR}")
    if (tts / "model.safetensors").exists() and (vocoder / "model.safetensors").exists():
        package_tts_starter(tts, vocoder, data, version=version,
                            evaluation=json.loads(tts_eval.read_text()) if tts_eval else None)
        err.print(f"voice starter written to {STARTER_TTS_DIR}")
