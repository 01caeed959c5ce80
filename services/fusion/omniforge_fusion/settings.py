from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from omniforge_shared.images import MAX_BYTES, MAX_PIXELS
from omniforge_shared.serving import ServiceSettings
from omniforge_shared.settings import omniforge_home


class FusionServiceSettings(ServiceSettings):
    """Fusion service settings, from OMNIFORGE_FUSION_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="OMNIFORGE_FUSION_", protected_namespaces=())

    port: int = Field(50053, ge=0, le=65535)
    metrics_port: int = Field(9104, ge=0, le=65535)
    # the search index: an embedded ChromaDB here, or a Chroma server when OMNIFORGE_CHROMA_URL is set
    chroma_path: Path = Field(default_factory=lambda: omniforge_home() / "chroma")
    chroma_url: str | None = Field(None, validation_alias=AliasChoices("OMNIFORGE_CHROMA_URL", "chroma_url"))
    max_image_bytes: int = Field(MAX_BYTES, ge=1024)
    max_image_pixels: int = Field(MAX_PIXELS, ge=64 * 64)
    max_inputs: int = Field(256, ge=1)            # texts or images per Embed / AddItems call
    # a captioner bundle folder, served beside `bundle` (the registry's production one otherwise)
    caption_bundle: Path | None = None
    caption_max_batch: int = Field(16, ge=1, le=256)
    # an audio tower bundle folder, served beside `bundle` (the registry's production one otherwise)
    audio_bundle: Path | None = None
    max_audio_bytes: int = Field(25 * 2**20, ge=1024)
    max_audio_seconds: float = Field(60.0, gt=0.0, le=600.0)       # a spoken query
