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

    def open(self):
        from .artifacts import LocalArtifactStore
        from .registry import Registry

        registry = Registry(self.database_url, LocalArtifactStore(self.artifact_root))
        registry.upgrade()
        return registry
