from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .settings import default_database_url, omniforge_home


class RegistrySettings(BaseSettings):
    """Where the registry lives, from OMNIFORGE_DATABASE_URL and OMNIFORGE_ARTIFACT_ROOT."""

    model_config = SettingsConfigDict(env_prefix="OMNIFORGE_")

    database_url: str = Field(default_factory=default_database_url)
    artifact_root: Path = Field(default_factory=lambda: omniforge_home() / "artifacts")
    # the only folder whose paths training jobs may name (uploads land here too)
    data_root: Path = Field(default_factory=lambda: omniforge_home() / "data")
    # when set, stage changes are published here and services swap models at once;
    # without it services poll the registry
    redis_url: str | None = None

    def open(self):
        from .artifacts import LocalArtifactStore
        from .registry import Registry

        registry = Registry(self.database_url, LocalArtifactStore(self.artifact_root))
        registry.upgrade()
        if self.redis_url:
            from .events import RedisEvents

            registry.on_stage_change.append(RedisEvents(self.redis_url).publish_stage_change)
        return registry
