"""What a training job may ask for: recipe names and their hyper-parameter schemas.

This module imports no torch, so the gateway can validate a job (422 with what is allowed)
before it is queued.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TextLMParams(BaseModel):
    """Hyper-parameters of the `text-lm` recipe (a GPT trained from scratch)."""
    model_config = ConfigDict(extra="forbid")

    tokenizer: Literal["char", "bpe"] = "bpe"
    vocab_size: int = Field(4096, ge=256, le=65535)
    n_layer: int = Field(4, ge=1, le=48)
    n_head: int = Field(4, ge=1, le=64)
    n_embd: int = Field(128, ge=8, le=4096)
    block_size: int = Field(128, ge=8, le=4096)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    batch_size: int = Field(16, ge=1, le=1024)
    grad_accum: int = Field(1, ge=1, le=1024)
    max_iters: int = Field(1000, ge=1, le=10_000_000)
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    warmup_iters: int = Field(100, ge=0)
    weight_decay: float = Field(0.1, ge=0.0, le=1.0)
    eval_interval: int = Field(100, ge=0)
    checkpoint_interval: int = Field(50, ge=1)
    seed: int = Field(1337, ge=0)
    threads: int = Field(0, ge=0, le=256)
    int8: bool = Field(True, description="also export an INT8 graph and report its perplexity change")
    promote: bool = Field(False, description="put the model in production if it passes the gate")

    def memory_bytes(self) -> dict[str, int]:
        """Estimated peak memory of one training step, fp32, by part.

        weights, gradients and AdamW's two moments: 16 bytes a parameter; activations kept for
        the backward pass: per layer B*T*C*(34 + 5*nh*T/C) bytes at 16 bits (Korthikanti et al.
        2022), the second term being the (B, nh, T, T) attention scores, doubled for fp32;
        logits and their gradient: about 3*B*T*V floats.
        """
        L, C, T, B, V, nh = self.n_layer, self.n_embd, self.block_size, self.batch_size, self.vocab_size, self.n_head
        params = 12 * L * C * C + V * C                       # blocks + tied embedding
        parts = {"weights_and_optimizer": 16 * params,
                 "activations": 2 * L * B * T * C * (34 + 5 * nh * T // C),
                 "logits": 3 * 4 * B * T * V}
        return {**parts, "total": sum(parts.values())}

    @model_validator(mode="after")
    def _heads_divide_width(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if (self.n_embd // self.n_head) % 8:
            raise ValueError(f"head size n_embd/n_head={self.n_embd // self.n_head} must be a multiple of 8 "
                             "(the served graph's attention kernel needs it), e.g. n_embd=128 with n_head=4")
        return self


class TextLoRAParams(BaseModel):
    """Hyper-parameters of the `text-lora` recipe (fine-tunes a registered text model)."""
    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(description="registered text model, `name` (production) or `name:version`")
    r: int = Field(8, ge=1, le=256)
    alpha: int = Field(16, ge=1, le=1024)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[Literal["c_attn", "c_proj", "c_fc"]] = Field(
        default_factory=lambda: ["c_attn", "c_proj", "c_fc"])
    block_size: int = Field(128, ge=8, le=4096)
    batch_size: int = Field(8, ge=1, le=1024)
    max_iters: int = Field(200, ge=1, le=1_000_000)
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    seed: int = Field(1337, ge=0)
    threads: int = Field(0, ge=0, le=256)
    int8: bool = False
    promote: bool = False


class CLIPParams(BaseModel):
    """Hyper-parameters of the `clip` recipe: a ViT image tower trained from scratch against the
    frozen MiniLM text tower, on an image-text dataset."""
    model_config = ConfigDict(extra="forbid")

    image_size: int = Field(64, ge=16, le=512)
    patch_size: Literal[2, 4, 8, 16] = 8
    n_layer: int = Field(6, ge=1, le=48)
    n_head: int = Field(4, ge=1, le=64)
    n_embd: int = Field(128, ge=16, le=2048)
    embed_dim: int = Field(256, ge=16, le=4096, description="the shared latent space's dimension")
    batch_size: int = Field(256, ge=2, le=65536)
    max_steps: int = Field(2400, ge=1, le=10_000_000)
    lr: float = Field(1.5e-3, gt=0.0, le=1.0)
    warmup_steps: int = Field(150, ge=0)
    weight_decay: float = Field(0.05, ge=0.0, le=1.0)
    name_bank_weight: float = Field(1.0, ge=0.0, le=100.0)
    text_tower: Literal["minilm", "own"] = Field("minilm", description="frozen pretrained MiniLM, or our own")
    text_layers: int = Field(2, ge=1, le=24, description="our own text tower's depth")
    text_embd: int = Field(128, ge=32, le=2048, description="our own text tower's width (a multiple of 32)")
    init_model: str | None = Field(None, description="registered embedding model (`name` or `name:version`) of "
                                   "the same shape to start from, instead of from scratch")
    lock_text: bool = Field(False, description="keep the text side fixed, so the shared space (and every model "
                            "aligned to it) does not move")
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0, description="keep a moving average of the weights with this "
                             "decay (e.g. 0.998) and make it the model; 0: off")
    flat_p: float = Field(0.2, ge=0.0, le=1.0, description="how often an image loses its shading (posterize) "
                          "and, independently, its fine line work (median filter)")
    eval_interval: int = Field(200, ge=0)
    checkpoint_interval: int = Field(100, ge=1)
    seed: int = Field(1337, ge=0)
    threads: int = Field(0, ge=0, le=256)
    promote: bool = False

    def memory_bytes(self) -> dict[str, int]:
        """Rough peak of one step, fp32: weights + AdamW (16 B a parameter), and the activations kept
        for backward, about 30 floats per token and width per layer plus the attention scores."""
        C, L, B = self.n_embd, self.n_layer, self.batch_size
        N = (self.image_size // self.patch_size) ** 2
        params = 12 * L * C * C + N * C + C * self.embed_dim + 384 * self.embed_dim
        parts = {"weights_and_optimizer": 16 * params,
                 "activations": 4 * L * B * N * (30 * C + 2 * self.n_head * N),
                 "stem": 4 * B * 3 * self.image_size ** 2 * 8}
        return {**parts, "total": sum(parts.values())}

    @model_validator(mode="after")
    def _shapes(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size={self.image_size} must be a multiple of patch_size={self.patch_size}")
        return self


class CaptionParams(BaseModel):
    """Hyper-parameters of the `caption` recipe: a prefix captioner (GPT decoder) on top of a
    registered CLIP model's image tower, with a registered text model's BPE tokenizer."""
    model_config = ConfigDict(extra="forbid")

    clip_model: str = Field("clip-starter", description="registered embedding model, `name` or `name:version`")
    tokenizer_model: str = Field("text-starter", description="registered text model whose tokenizer to use")
    n_layer: int = Field(3, ge=1, le=48)
    n_head: int = Field(4, ge=1, le=64)
    n_embd: int = Field(256, ge=16, le=4096)
    block_size: int = Field(64, ge=16, le=1024)
    batch_size: int = Field(128, ge=2, le=65536)
    max_steps: int = Field(1500, ge=1, le=10_000_000)
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    warmup_steps: int = Field(100, ge=0)
    colour_prompt_share: float = Field(0.2, ge=0.0, le=1.0)
    eval_interval: int = Field(250, ge=0)
    checkpoint_interval: int = Field(100, ge=1)
    seed: int = Field(1337, ge=0)
    threads: int = Field(0, ge=0, le=256)
    promote: bool = False

    @model_validator(mode="after")
    def _heads(self):
        if self.n_embd % self.n_head or (self.n_embd // self.n_head) % 8:
            raise ValueError(f"n_embd={self.n_embd} / n_head={self.n_head} must give a head size that is a multiple of 8")
        return self


class DiffusionParams(BaseModel):
    """Hyper-parameters of the `diffusion` recipe: a pixel-space U-Net conditioned on a registered
    CLIP model's text embeddings."""
    model_config = ConfigDict(extra="forbid")

    clip_model: str = Field("clip-starter", description="registered embedding model, `name` or `name:version`")
    image_size: Literal[16, 32, 64] = 64
    patch: Literal[1, 2, 4] = 2
    channels: list[int] = Field(default_factory=lambda: [32, 64, 128, 128], min_length=2, max_length=5)
    layers_per_block: int = Field(1, ge=1, le=4)
    batch_size: int = Field(64, ge=2, le=65536)
    max_steps: int = Field(4000, ge=1, le=10_000_000)
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0)
    cond_drop: float = Field(0.15, ge=0.0, le=1.0)
    eval_interval: int = Field(500, ge=0)
    checkpoint_interval: int = Field(100, ge=1)
    eval_concepts: int = Field(200, ge=1)
    seed: int = Field(1337, ge=0)
    threads: int = Field(0, ge=0, le=256)
    promote: bool = False

    @model_validator(mode="after")
    def _groups(self):
        if any(c % 16 for c in self.channels):
            raise ValueError(f"channels {self.channels} must be multiples of 16 (the U-Net's group norm)")
        div = self.patch * 2 ** (len(self.channels) - 1)
        if self.image_size % div:
            raise ValueError(f"image_size {self.image_size} must divide by patch x 2^(levels-1) = {div}: "
                             "use fewer levels in channels or a smaller patch")
        return self


class ASRParams(BaseModel):
    """Hyper-parameters of the `asr` recipe: a conformer-CTC recognizer over characters on a speech
    dataset (any layout `omniforge data speech` reads), with a word trigram for beam search."""
    model_config = ConfigDict(extra="forbid")

    d_model: int = Field(144, ge=32, le=1024)
    n_layers: int = Field(8, ge=1, le=32)
    n_heads: int = Field(4, ge=1, le=16)
    conv_kernel: int = Field(15, ge=3, le=63)
    batch_seconds: float = Field(100.0, ge=5.0, le=10_000.0, description="padded audio seconds per batch")
    max_steps: int = Field(2400, ge=1, le=10_000_000)
    lr: float = Field(2e-3, gt=0.0, le=1.0)
    warmup_steps: int = Field(300, ge=0)
    augment: bool = True
    eval_interval: int = Field(500, ge=0)
    checkpoint_interval: int = Field(100, ge=1)
    language_model: bool = Field(True, description="build the word trigram (beam search) into the bundle")
    seed: int = Field(1337, ge=0)
    threads: int = Field(0, ge=0, le=256)
    promote: bool = False

    @model_validator(mode="after")
    def _heads(self):
        if self.d_model % self.n_heads or self.conv_kernel % 2 == 0:
            raise ValueError(f"d_model={self.d_model} must divide by n_heads={self.n_heads}, and conv_kernel "
                             f"({self.conv_kernel}) must be odd")
        return self


class TTSParams(BaseModel):
    """Hyper-parameters of the `tts` recipe: the FastSpeech-style acoustic model on the voices of a
    speech dataset that carry durations, voiced by a registered vocoder."""
    model_config = ConfigDict(extra="forbid")

    vocoder_model: str = Field("vocoder-starter", description="registered vocoder, `name` or `name:version`")
    voices: list[str] = Field(default_factory=lambda: ["joe"], min_length=1)
    reference_voice: str = Field("joe", description="the voice with alignments whose recordings of the same "
                                 "sentences time the voices that have none")
    d_model: int = Field(192, ge=32, le=1024)
    enc_layers: int = Field(4, ge=1, le=16)
    dec_layers: int = Field(4, ge=1, le=16)
    batch_frames: int = Field(6000, ge=200, le=1_000_000)
    max_steps: int = Field(2000, ge=1, le=10_000_000)
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    eval_interval: int = Field(500, ge=0)
    checkpoint_interval: int = Field(100, ge=1)
    seed: int = Field(1337, ge=0)
    threads: int = Field(0, ge=0, le=256)
    promote: bool = False


class VocoderParams(BaseModel):
    """Hyper-parameters of the `vocoder` recipe: the Fourier-head vocoder (mel -> waveform)."""
    model_config = ConfigDict(extra="forbid")

    voices: list[str] = Field(default_factory=list, description="empty: every training voice")
    dim: int = Field(256, ge=32, le=2048)
    layers: int = Field(8, ge=1, le=32)
    batch_size: int = Field(16, ge=1, le=4096)
    segment_frames: int = Field(48, ge=8, le=1024)
    max_steps: int = Field(3000, ge=1, le=10_000_000)
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    eval_interval: int = Field(500, ge=0)
    checkpoint_interval: int = Field(100, ge=1)
    seed: int = Field(1337, ge=0)
    threads: int = Field(0, ge=0, le=256)
    promote: bool = False


class AudioAlignParams(BaseModel):
    """Hyper-parameters of the `audio-align` recipe: an audio tower on a registered recognizer's
    encoder, trained into a registered embedding model's shared space on (audio, transcript) pairs."""
    model_config = ConfigDict(extra="forbid")

    clip_model: str = Field("clip-starter", description="registered embedding model whose space to join")
    asr_model: str = Field("asr-starter", description="registered recognizer whose encoder to start from")
    extra_datasets: list[str] = Field(default_factory=list,
                                      description="more registered speech datasets (`name` or `name:version`)")
    images_dataset: str | None = Field(None, description="registered image-text dataset for the spoken image "
                                       "search test (its concepts must match the speech items')")
    head_layers: int = Field(1, ge=0, le=8)
    tune_layers: int = Field(2, ge=0, le=32, description="top encoder blocks that keep learning")
    batch_seconds: float = Field(200.0, ge=5.0, le=100_000.0, description="padded audio seconds per batch")
    max_steps: int = Field(800, ge=1, le=10_000_000)
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    warmup_steps: int = Field(100, ge=0)
    distill_weight: float = Field(1.0, ge=0.0, le=100.0)
    eval_interval: int = Field(200, ge=0)
    checkpoint_interval: int = Field(200, ge=1)
    seed: int = Field(1337, ge=0)
    threads: int = Field(0, ge=0, le=256)
    promote: bool = False


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queue: Literal["cpu", "gpu"] = "cpu"


class RecipeSpec(BaseModel):
    name: str
    task: str
    params: type[BaseModel]

    model_config = ConfigDict(arbitrary_types_allowed=True)


class DatasetBuildParams(BaseModel):
    """How an uploaded file becomes a token dataset (the `dataset-build` job of POST /datasets)."""
    model_config = ConfigDict(extra="forbid")

    tokenizer: Literal["char", "bpe"] = "bpe"
    vocab_size: int = Field(4096, ge=256, le=65535)
    val_fraction: float = Field(0.05, gt=0.0, lt=0.5)
    language: str | None = Field("en", description="keep only this language; null = all")
    text_field: str = Field("text", description="the JSONL field or Parquet column holding the text")
    seed: int = Field(1337, ge=0)


# a job that builds and registers a dataset from an upload, run by the same workers
DATASET_BUILD = "dataset-build"

# name -> spec; image and audio recipes add themselves here from their own issues
RECIPE_SPECS: dict[str, RecipeSpec] = {
    "text-lm": RecipeSpec(name="text-lm", task="text-generation", params=TextLMParams),
    "text-lora": RecipeSpec(name="text-lora", task="text-generation", params=TextLoRAParams),
    "clip": RecipeSpec(name="clip", task="embedding", params=CLIPParams),
    "caption": RecipeSpec(name="caption", task="image-caption", params=CaptionParams),
    "diffusion": RecipeSpec(name="diffusion", task="text-to-image", params=DiffusionParams),
    "asr": RecipeSpec(name="asr", task="speech-recognition", params=ASRParams),
    "tts": RecipeSpec(name="tts", task="text-to-speech", params=TTSParams),
    "vocoder": RecipeSpec(name="vocoder", task="vocoder", params=VocoderParams),
    "audio-align": RecipeSpec(name="audio-align", task="audio-embedding", params=AudioAlignParams),
}


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:,.1f} TB"


def memory_problem(params: BaseModel, limit_bytes: int, *, where: str) -> str | None:
    """Why a job with these parameters cannot fit in `limit_bytes`, or None when it can."""
    if not hasattr(params, "memory_bytes"):
        return None
    need = params.memory_bytes()
    if need["total"] <= limit_bytes:
        return None
    parts = ", ".join(f"{k.replace('_', ' ')} {format_bytes(v)}" for k, v in need.items() if k != "total")
    return (f"this job needs about {format_bytes(need['total'])} of memory to train ({parts}); {where} "
            f"{format_bytes(limit_bytes)}: lower batch_size, block_size, n_layer or n_embd")


def validate_params(recipe: str, params: dict) -> BaseModel:
    """Raises KeyError for an unknown recipe, pydantic.ValidationError for bad params."""
    if recipe not in RECIPE_SPECS:
        raise KeyError(f"unknown recipe {recipe!r}; available: {sorted(RECIPE_SPECS)}")
    return RECIPE_SPECS[recipe].params.model_validate(params)
