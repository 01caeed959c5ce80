from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from omniforge_shared.serving import ServiceSettings


class AudioServiceSettings(ServiceSettings):
    """Audio service settings, from OMNIFORGE_AUDIO_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="OMNIFORGE_AUDIO_", protected_namespaces=())

    port: int = Field(50054, ge=0, le=65535)
    metrics_port: int = Field(9105, ge=0, le=65535)
    # a text-to-speech bundle folder served beside `bundle` (the speech-recognition one)
    tts_bundle: Path | None = None
    max_audio_mb: float = Field(25.0, gt=0, le=512)
    max_audio_seconds: float = Field(600.0, gt=0)          # per Transcribe call; StreamTranscribe has no limit
    max_text_chars: int = Field(20_000, ge=1)
    window_seconds: float = Field(20.0, ge=2.0, le=60.0)    # long audio is recognised in windows of this
    max_batch: int = Field(8, ge=1, le=64)                  # concurrent windows sharing one model run
    # spectrum warps each window is read through, the most confident reading kept (None: the
    # bundle's own; [1.0]: one plain reading, a third of the acoustic model's work for its warps)
    warps: list[Annotated[float, Field(ge=0.5, le=2.0)]] | None = Field(None, min_length=1)
    partial_every_s: float = Field(1.0, gt=0)               # StreamTranscribe: a partial result this often
