from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from omniforge_shared.images import MAX_BYTES, MAX_PIXELS
from omniforge_shared.serving import ServiceSettings


class ImageServiceSettings(ServiceSettings):
    """Image service settings, from OMNIFORGE_IMAGE_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="OMNIFORGE_IMAGE_", protected_namespaces=())

    port: int = Field(50052, ge=0, le=65535)
    metrics_port: int = Field(9103, ge=0, le=65535)
    # an embedding (CLIP) bundle folder served beside `bundle` (the text-to-image one) for Encode
    encoder_bundle: Path | None = None
    max_images: int = Field(8, ge=1, le=64)          # images per Generate call
    max_steps: int = Field(200, ge=1, le=1000)
    max_size: int = Field(512, ge=16, le=2048)       # the largest output side (upscaled from the model's)
    max_image_bytes: int = Field(MAX_BYTES, ge=1024)
    max_image_pixels: int = Field(MAX_PIXELS, ge=64 * 64)
