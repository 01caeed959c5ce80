"""What every model service is configured with; a service subclasses it with its own
environment prefix (OMNIFORGE_TEXT_, OMNIFORGE_IMAGE_, ...) and adds its engine's settings."""
from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from omniforge_shared.settings import default_database_url, omniforge_home


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(protected_namespaces=())

    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)
    # Prometheus: http://metrics_host:metrics_port/metrics (a port that is taken is logged, not fatal)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9101, ge=0, le=65535)
    # where models come from: a bundle folder, or the registry's production versions
    bundle: Path | None = None
    # shared with the CLI and the gateway: OMNIFORGE_DATABASE_URL, OMNIFORGE_ARTIFACT_ROOT
    database_url: str = Field(default_factory=default_database_url,
                              validation_alias=AliasChoices("OMNIFORGE_DATABASE_URL", "database_url"))
    artifact_root: Path = Field(default_factory=lambda: omniforge_home() / "artifacts",
                                validation_alias=AliasChoices("OMNIFORGE_ARTIFACT_ROOT", "artifact_root"))
    models: list[str] = Field(default_factory=list)   # empty = every model of the service's task
    threads: int = Field(0, ge=0)                      # 0 = the runtime's default
    max_message_mb: int = Field(32, ge=1, le=1024)     # largest gRPC message in or out
    grace_seconds: float = Field(5.0, ge=0)            # running calls may finish this long on SIGTERM
    # how the service learns of promotions: Redis pub/sub when OMNIFORGE_REDIS_URL is set,
    # and polling the registry every poll_seconds in any case (0 = never)
    redis_url: str | None = Field(None, validation_alias=AliasChoices("OMNIFORGE_REDIS_URL", "redis_url"))
    poll_seconds: float = Field(5.0, ge=0)
