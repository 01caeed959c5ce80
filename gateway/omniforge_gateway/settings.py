from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    """Gateway settings, from OMNIFORGE_GATEWAY_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="OMNIFORGE_GATEWAY_")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    text_address: str = "127.0.0.1:50051"
    request_timeout_s: float = Field(300.0, gt=0)      # gRPC deadline for one generation
    health_timeout_s: float = Field(1.0, gt=0)
    retry_after_s: int = Field(2, ge=1)                # sent with 503 when a service is down
    max_tokens_limit: int = Field(4096, ge=1)
    max_prompt_chars: int = Field(200_000, ge=1)
