"""Recipes: plain functions registered by name that train a model from a dataset.

A recipe runs with or without Celery: it gets a `JobContext` (where to write, how to report
progress, whether to stop) and returns where its trained run lies.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from omniforge_shared.jobs.specs import RECIPE_SPECS, validate_params


@dataclass
class JobContext:
    work_dir: Path
    dataset: Path
    params: dict
    registry: object | None = None       # for recipes that start from a registered model
    report: Callable[[int, int, float | None, dict], None] = lambda step, total, eta, metrics: None
    should_stop: Callable[[], bool] = lambda: False
    log: Callable[[str], None] = print


@dataclass
class RecipeResult:
    run_dir: Path
    summary: dict
    stopped: bool
    finish_bundle: Callable[[Path], None] | None = None   # adds recipe-specific files after export
    # (out, name, version, extra) -> Bundle; None = the text decoder export
    export: Callable | None = None
    # the metric the promotion gate compares with production's, and which way is better
    gate: tuple[str, str] = ("val_loss", "min")


RECIPES: dict[str, Callable[[JobContext], RecipeResult]] = {}


def recipe(name: str):
    if name not in RECIPE_SPECS:
        raise KeyError(f"recipe {name!r} has no spec in specs.RECIPE_SPECS")

    def register(fn):
        RECIPES[name] = fn
        return fn
    return register


def _reporter(ctx: JobContext, stopped: list[bool]):
    def on_step(r) -> bool:
        ctx.report(r.step, r.max_iters, r.eta_s, {"loss": r.loss, "lr": r.lr, **r.metrics})
        stopped[0] = ctx.should_stop()
        return not stopped[0]
    return on_step


def _with_weights(ctx: JobContext, ref: str, needed_for: str):
    """The registered bundle `name` or `name:version`, which must carry torch weights to start from."""
    if ctx.registry is None:
        raise ValueError(f"{needed_for} needs the registry to find {ref}")
    name, _, version = ref.partition(":")
    bundle = ctx.registry.bundle(name, version or None)
    if not bundle.has("weights"):
        raise ValueError(f"{bundle.name}:{bundle.version} has no torch weights to start from; "
                         "register it with a current `omniforge` (the export now bundles them)")
    return bundle


@recipe("text-lm")
def text_lm(ctx: JobContext) -> RecipeResult:
    """A GPT trained from scratch on a token dataset or a text file; resumes from its checkpoint."""
    from ..train_text import StepReport, TrainConfig, train_text

    p = validate_params("text-lm", ctx.params)
    cfg = TrainConfig(data=str(ctx.dataset), out=str(ctx.work_dir / "run"), tokenizer=p.tokenizer,
                      vocab_size=p.vocab_size, n_layer=p.n_layer, n_head=p.n_head, n_embd=p.n_embd,
                      block_size=p.block_size, dropout=p.dropout, batch_size=p.batch_size, grad_accum=p.grad_accum,
                      max_iters=p.max_iters, lr=p.lr, warmup_iters=min(p.warmup_iters, p.max_iters),
                      weight_decay=p.weight_decay, eval_interval=p.eval_interval,
                      checkpoint_interval=p.checkpoint_interval, seed=p.seed, threads=p.threads,
                      sample_tokens=0, resume=True)
    last_report = [0.0]
    stopped = [False]

    def on_step(r: StepReport) -> bool:
        metrics = {"loss": r.loss, "lr": r.lr, "tokens_per_s": r.tokens_per_s, **r.metrics}
        # report every eval, and otherwise at most twice a second
        if r.metrics or time.time() - last_report[0] > 0.5 or r.step == r.max_iters:
            ctx.report(r.step, r.max_iters, r.eta_s, metrics)
            last_report[0] = time.time()
        if ctx.should_stop():
            stopped[0] = True
            return False
        return True

    summary = train_text(cfg, on_step=on_step, progress=False, log=ctx.log)
    return RecipeResult(run_dir=Path(cfg.out), summary=summary, stopped=stopped[0])


@recipe("text-lora")
def text_lora(ctx: JobContext) -> RecipeResult:
    """LoRA fine-tuning of a registered text model on a text corpus (txt, JSONL, Parquet, HF)."""
    from ..finetune_lora import LoraConfigSpec, add_adapter_files, finetune_lora
    from ..train_text import StepReport

    p = validate_params("text-lora", ctx.params)
    if ctx.registry is None:
        raise ValueError("text-lora needs the registry to find its base model")
    name, _, version = p.base_model.partition(":")
    base = ctx.registry.bundle(name, version or None)
    spec = LoraConfigSpec(r=p.r, alpha=p.alpha, dropout=p.dropout, target_modules=list(p.target_modules),
                          block_size=p.block_size, batch_size=p.batch_size, max_iters=p.max_iters, lr=p.lr,
                          val_fraction=p.val_fraction, seed=p.seed, threads=p.threads)
    stopped = [False]

    def on_step(r: StepReport) -> bool:
        ctx.report(r.step, r.max_iters, r.eta_s, {"loss": r.loss, "lr": r.lr})
        stopped[0] = ctx.should_stop()
        return not stopped[0]

    run_dir = ctx.work_dir / "run"
    summary = finetune_lora(base, ctx.dataset, run_dir, spec, on_step=on_step, log=ctx.log)
    return RecipeResult(run_dir=run_dir, summary=summary, stopped=stopped[0],
                        finish_bundle=lambda bundle_dir: add_adapter_files(bundle_dir, run_dir, base))


@recipe("clip")
def clip(ctx: JobContext) -> RecipeResult:
    """A CLIP image tower (ViT from scratch) aligned with the frozen MiniLM text tower."""
    from ..data.image_text import load_image_text
    from ..export_clip import export_clip_bundle
    from ..train_clip import CLIPTrainConfig, train_clip

    p = validate_params("clip", ctx.params)
    fields = p.model_dump(exclude={"promote", "threads", "init_model"})
    init = str(_with_weights(ctx, p.init_model, "init_model").path) if p.init_model else ""
    cfg = CLIPTrainConfig(data=str(ctx.dataset), out=str(ctx.work_dir / "run"), threads=p.threads or 2, init=init,
                          **fields)
    stopped = [False]

    def on_step(r) -> bool:
        ctx.report(r.step, r.max_iters, r.eta_s, {"loss": r.loss, "lr": r.lr, "images_per_s": r.tokens_per_s,
                                                   **{k: v for k, v in r.metrics.items() if v is not None}})
        stopped[0] = ctx.should_stop()
        return not stopped[0]

    summary = train_clip(cfg, on_step=on_step, log=ctx.log, progress=False)

    def export(out: Path, name: str, version: str, extra: dict):
        images = load_image_text(ctx.dataset).images[:8]
        return export_clip_bundle(Path(cfg.out), out, name=name, version=version, sample_images=images,
                                  log=ctx.log, extra=extra)

    # the gate: recall on the held-out style where the data has one (thousands of queries against
    # every name), else on the validation concepts
    gate = "heldout_style_i2t_R@5" if "heldout_style" in summary["retrieval"] else "val_i2t_R@5"
    return RecipeResult(run_dir=Path(cfg.out), summary=summary, stopped=stopped[0], export=export,
                        gate=(gate, "max"))


@recipe("caption")
def caption(ctx: JobContext) -> RecipeResult:
    """A prefix captioner on a registered CLIP's (frozen) image tower."""
    from ..data.image_text import load_image_text
    from ..export_caption import export_caption_bundle
    from ..train_caption import CaptionTrainConfig, train_caption

    p = validate_params("caption", ctx.params)
    clip_bundle = _with_weights(ctx, p.clip_model, "the caption recipe")
    tname, _, tversion = p.tokenizer_model.partition(":")
    tokenizer = ctx.registry.bundle(tname, tversion or None).file("tokenizer")
    fields = p.model_dump(exclude={"promote", "threads", "clip_model", "tokenizer_model"})
    cfg = CaptionTrainConfig(data=str(ctx.dataset), clip=str(clip_bundle.path), tokenizer=str(tokenizer),
                             out=str(ctx.work_dir / "run"), threads=p.threads or 2, **fields)
    stopped = [False]
    summary = train_caption(cfg, on_step=_reporter(ctx, stopped), log=ctx.log, progress=False)

    def export(out: Path, name: str, version: str, extra: dict):
        images = load_image_text(ctx.dataset).images[:4]
        return export_caption_bundle(Path(cfg.out), clip_bundle.path, out, name=name, version=version,
                                     sample_images=images, log=ctx.log,
                                     extra={**extra, "clip_model": {"name": clip_bundle.name,
                                                                    "version": clip_bundle.version}})

    gate = "heldout_style_cider_d" if "heldout_style" in summary["quality"] else "val_cider_d"
    return RecipeResult(run_dir=Path(cfg.out), summary=summary, stopped=stopped[0], export=export, gate=(gate, "max"))


@recipe("diffusion")
def diffusion(ctx: JobContext) -> RecipeResult:
    """A pixel-space text-to-image U-Net conditioned on a registered CLIP's text tower."""
    from ..export_diffusion import export_diffusion_bundle
    from ..train_diffusion import DiffusionTrainConfig, train_diffusion

    p = validate_params("diffusion", ctx.params)
    if ctx.registry is None:
        raise ValueError("the diffusion recipe needs the registry to find its CLIP model")
    name, _, version = p.clip_model.partition(":")
    clip_bundle = ctx.registry.bundle(name, version or None)
    fields = p.model_dump(exclude={"promote", "threads", "clip_model"})
    fields["channels"] = tuple(fields["channels"])
    cfg = DiffusionTrainConfig(data=str(ctx.dataset), clip=str(clip_bundle.path), out=str(ctx.work_dir / "run"),
                               threads=p.threads or 2, **fields)
    stopped = [False]

    def on_step(r) -> bool:
        ctx.report(r.step, r.max_iters, r.eta_s, {"loss": r.loss, "lr": r.lr, "images_per_s": r.tokens_per_s})
        stopped[0] = ctx.should_stop()
        return not stopped[0]

    summary = train_diffusion(cfg, on_step=on_step, log=ctx.log, progress=False)

    def export(out: Path, name: str, version: str, extra: dict):
        return export_diffusion_bundle(Path(cfg.out), clip_bundle.path, out, name=name, version=version, log=ctx.log,
                                       extra={**extra, "clip_model": {"name": clip_bundle.name,
                                                                      "version": clip_bundle.version}})

    return RecipeResult(run_dir=Path(cfg.out), summary=summary, stopped=stopped[0], export=export,
                        gate=("top5_concept_hit", "max"))


@recipe("asr")
def asr(ctx: JobContext) -> RecipeResult:
    """The conformer-CTC recognizer; its bundle carries a word trigram that never saw the test sentences."""
    from ..export_asr import export_asr_bundle
    from ..starter.speech import heldout_transcripts
    from ..train_asr import ASRTrainConfig, train_asr

    p = validate_params("asr", ctx.params)
    fields = p.model_dump(exclude={"promote", "threads", "language_model"})
    cfg = ASRTrainConfig(data=str(ctx.dataset), out=str(ctx.work_dir / "run"), threads=p.threads or 2, **fields)
    stopped = [False]
    summary = train_asr(cfg, on_step=_reporter(ctx, stopped), log=ctx.log, progress=False)

    def export(out: Path, name: str, version: str, extra: dict):
        return export_asr_bundle(Path(cfg.out), out, name=name, version=version, log=ctx.log, extra=extra,
                                 heldout=set(heldout_transcripts(ctx.dataset)), with_lm=p.language_model)

    gate = "heldout_voice_wer" if summary["quality"].get("heldout_voice") else "all_wer"
    return RecipeResult(run_dir=Path(cfg.out), summary=summary, stopped=stopped[0], export=export, gate=(gate, "min"))


@recipe("vocoder")
def vocoder(ctx: JobContext) -> RecipeResult:
    """The Fourier-head vocoder; its bundle keeps the torch weights for the `tts` recipe."""
    from ..export_tts import export_vocoder_bundle
    from ..train_vocoder import VocoderTrainConfig, train_vocoder

    p = validate_params("vocoder", ctx.params)
    fields = p.model_dump(exclude={"promote", "threads"})
    cfg = VocoderTrainConfig(data=str(ctx.dataset), out=str(ctx.work_dir / "run"), threads=p.threads or 2, **fields)
    stopped = [False]
    summary = train_vocoder(cfg, on_step=_reporter(ctx, stopped), log=ctx.log, progress=False)

    def export(out: Path, name: str, version: str, extra: dict):
        return export_vocoder_bundle(Path(cfg.out), out, name=name, version=version, log=ctx.log, extra=extra)

    return RecipeResult(run_dir=Path(cfg.out), summary=summary, stopped=stopped[0], export=export,
                        gate=("val_mel_l1", "min"))


@recipe("tts")
def tts(ctx: JobContext) -> RecipeResult:
    """The acoustic model, voiced by a registered vocoder, exported as one text-to-speech bundle."""
    from ..export_tts import export_tts_bundle
    from ..train_tts import TTSTrainConfig, train_tts

    p = validate_params("tts", ctx.params)
    if ctx.registry is None:
        raise ValueError("the tts recipe needs the registry to find its vocoder")
    name, _, version = p.vocoder_model.partition(":")
    voc = ctx.registry.bundle(name, version or None)
    if not voc.has("weights"):
        raise ValueError(f"{voc.name}:{voc.version} has no vocoder weights; register one with the `vocoder` recipe")
    fields = p.model_dump(exclude={"promote", "threads", "vocoder_model"})
    cfg = TTSTrainConfig(data=str(ctx.dataset), out=str(ctx.work_dir / "run"), threads=p.threads or 2, **fields)
    stopped = [False]
    summary = train_tts(cfg, on_step=_reporter(ctx, stopped), log=ctx.log, progress=False)

    def export(out: Path, name: str, version: str, extra: dict):
        return export_tts_bundle(Path(cfg.out), voc.path, out, name=name, version=version, log=ctx.log,
                                 extra={**extra, "vocoder_model": {"name": voc.name, "version": voc.version}})

    return RecipeResult(run_dir=Path(cfg.out), summary=summary, stopped=stopped[0], export=export,
                        gate=("tts_val_mel_l1", "min"))


@recipe("audio-align")
def audio_align(ctx: JobContext) -> RecipeResult:
    """The audio tower: a registered recognizer's encoder trained into a registered embedding
    model's space; its bundle names that model, and the fusion service serves them together."""
    from ..export_audio_tower import export_audio_tower_bundle
    from ..train_audio_align import AudioAlignConfig, train_audio_align

    p = validate_params("audio-align", ctx.params)
    if ctx.registry is None:
        raise ValueError("the audio-align recipe needs the registry to find its embedding model and recognizer")
    cname, _, cversion = p.clip_model.partition(":")
    clip_bundle = ctx.registry.bundle(cname, cversion or None)
    aname, _, aversion = p.asr_model.partition(":")
    asr_bundle = ctx.registry.bundle(aname, aversion or None)
    if not asr_bundle.has("weights"):
        raise ValueError(f"{asr_bundle.name}:{asr_bundle.version} has no torch weights to start from; "
                         "register it with a current `omniforge` (the export now bundles them)")
    extra = [ctx.registry.dataset_path(n, v or None) for n, _, v in (d.partition(":") for d in p.extra_datasets)]
    images = ""
    if p.images_dataset:
        iname, _, iversion = p.images_dataset.partition(":")
        images = str(ctx.registry.dataset_path(iname, iversion or None))
    fields = p.model_dump(exclude={"promote", "threads", "clip_model", "asr_model", "extra_datasets",
                                   "images_dataset"})
    cfg = AudioAlignConfig(data=[str(ctx.dataset), *map(str, extra)], space=str(clip_bundle.path),
                           asr=str(asr_bundle.path), images=images, out=str(ctx.work_dir / "run"),
                           threads=p.threads or 2, **fields)
    stopped = [False]
    summary = train_audio_align(cfg, on_step=_reporter(ctx, stopped), log=ctx.log, progress=False)

    def export(out: Path, name: str, version: str, extra: dict):
        return export_audio_tower_bundle(Path(cfg.out), out, name=name, version=version, log=ctx.log,
                                         extra={**extra, "asr_model": {"name": asr_bundle.name,
                                                                       "version": asr_bundle.version}})

    return RecipeResult(run_dir=Path(cfg.out), summary=summary, stopped=stopped[0], export=export,
                        gate=("heldout_voice_tower_r1", "max"))


def run_recipe(name: str, ctx: JobContext) -> RecipeResult:
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; available: {sorted(RECIPES)}")
    return RECIPES[name](ctx)
