from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    """Gateway settings, from OMNIFORGE_GATEWAY_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="OMNIFORGE_GATEWAY_")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # the model services' gRPC addresses (host:port); an empty one is not configured, and its
    # routes answer 503 naming the variable to set
    text_address: str | None = "127.0.0.1:50051"
    image_address: str | None = "127.0.0.1:50052"
    audio_address: str | None = "127.0.0.1:50054"
    fusion_address: str | None = "127.0.0.1:50053"
    request_timeout_s: float = Field(300.0, gt=0)      # gRPC deadline for one generation
    health_timeout_s: float = Field(1.0, gt=0)
    retry_after_s: int = Field(2, ge=1)                # sent with 503 when a service is down
    max_tokens_limit: int = Field(4096, ge=1)
    max_prompt_chars: int = Field(200_000, ge=1)
    # uploads (POST /datasets) land under the data root (OMNIFORGE_DATA_ROOT, RegistrySettings)
    max_upload_mb: float = Field(256.0, gt=0)
    # an image in a request (multipart file or base64): larger ones get a 413 before any decoding
    max_image_mb: float = Field(20.0, gt=0, le=64)
    # an audio file in a request (/transcribe, /embed): larger ones get a 413 before any decoding
    max_audio_mb: float = Field(25.0, gt=0, le=64)

    # API keys (`omniforge keys create`): on unless switched off, which only a local run may do
    auth: bool = True
    rate_limit_per_minute: int = Field(600, ge=1)       # per key, unless the key sets its own
    quota_per_day: int | None = Field(None, ge=1)       # requests per key a day; None = no quota
    # rate-limit counters shared by every gateway replica; in this process when unset
    redis_url: str | None = Field(None, validation_alias=AliasChoices("OMNIFORGE_REDIS_URL", "redis_url"))
    cors_origins: list[str] = Field(default_factory=list)   # e.g. ["https://app.example.com"]; [] = no CORS
    # HTTPS for clients (PEM files; `make certs` makes a local CA and certificates)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # TLS to the services: the CA that signed their certificates, and this gateway's own
    # certificate for services that require one (mutual TLS)
    grpc_ca: Path | None = None
    grpc_client_cert: Path | None = None
    grpc_client_key: Path | None = None

    def channel_credentials(self):
        """grpc channel credentials to the services when TLS is configured, else None (plain)."""
        if self.grpc_ca is None:
            return None
        import grpc

        return grpc.ssl_channel_credentials(
            root_certificates=self.grpc_ca.read_bytes(),
            private_key=self.grpc_client_key.read_bytes() if self.grpc_client_key else None,
            certificate_chain=self.grpc_client_cert.read_bytes() if self.grpc_client_cert else None)

    @model_validator(mode="after")
    def _tls_pairs(self):
        for what, a, b in (("TLS_CERT and TLS_KEY", self.tls_cert, self.tls_key),
                           ("GRPC_CLIENT_CERT and GRPC_CLIENT_KEY", self.grpc_client_cert, self.grpc_client_key)):
            if (a is None) != (b is None):
                raise ValueError(f"set both OMNIFORGE_GATEWAY_{what.replace(' and ', ' and OMNIFORGE_GATEWAY_')}, or neither")
        if self.grpc_client_cert is not None and self.grpc_ca is None:
            raise ValueError("a client certificate for the services needs OMNIFORGE_GATEWAY_GRPC_CA (their CA) too")
        return self

    @model_validator(mode="after")
    def _auth_off_only_locally(self):
        if not self.auth and not _loopback(self.host):
            raise ValueError(f"OMNIFORGE_GATEWAY_AUTH=off is for local runs only, and OMNIFORGE_GATEWAY_HOST="
                             f"{self.host} is reachable from other machines: set OMNIFORGE_GATEWAY_AUTH=on and "
                             "create keys with `omniforge keys create`")
        return self

    @field_validator("text_address", "image_address", "audio_address", "fusion_address")
    @classmethod
    def _empty_is_unset(cls, v):
        return v or None

    def addresses(self) -> dict[str, str | None]:
        """service label -> its address (None: not configured)."""
        return {label: getattr(self, f"{label}_address") for label in ("text", "image", "audio", "fusion")}


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
