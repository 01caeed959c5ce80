from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from omniforge_shared.settings import default_database_url, omniforge_home


class TextServiceSettings(BaseSettings):
    """Text service settings, from OMNIFORGE_TEXT_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="OMNIFORGE_TEXT_", protected_namespaces=())

    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)
    # where models come from: a bundle folder, or the registry's production versions
    bundle: Path | None = None
    # shared with the CLI and the gateway: OMNIFORGE_DATABASE_URL, OMNIFORGE_ARTIFACT_ROOT
    database_url: str = Field(default_factory=default_database_url,
                              validation_alias=AliasChoices("OMNIFORGE_DATABASE_URL", "database_url"))
    artifact_root: Path = Field(default_factory=lambda: omniforge_home() / "artifacts",
                                validation_alias=AliasChoices("OMNIFORGE_ARTIFACT_ROOT", "artifact_root"))
    models: list[str] = Field(default_factory=list)   # empty = every text-generation model
    backend: Literal["onnxruntime", "torch", "triton"] = "onnxruntime"
    triton_url: str = "127.0.0.1:8001"                 # Triton's gRPC address, for backend=triton
    int8: bool = False
    # LoRA bundles: "merged" serves their merged ONNX graph; "adapter" (torch backend) puts the
    # adapter on top of its base model's weights
    adapters: Literal["merged", "adapter"] = "merged"
    threads: int = Field(0, ge=0)                      # 0 = onnxruntime's default
    max_batch_size: int = Field(16, ge=1, le=256)
    max_tokens_limit: int = Field(1024, ge=1)
    grace_seconds: float = Field(5.0, ge=0)
    # how the service learns of promotions: Redis pub/sub when OMNIFORGE_REDIS_URL is set,
    # and polling the registry every poll_seconds in any case (0 = never)
    redis_url: str | None = Field(None, validation_alias=AliasChoices("OMNIFORGE_REDIS_URL", "redis_url"))
    poll_seconds: float = Field(5.0, ge=0)
