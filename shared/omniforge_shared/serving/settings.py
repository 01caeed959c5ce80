"""What every model service is configured with; a service subclasses it with its own
environment prefix (OMNIFORGE_TEXT_, OMNIFORGE_IMAGE_, ...) and adds its engine's settings."""
from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, model_validator
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
    # TLS on the gRPC port (PEM files; `make certs` makes a local CA and certificates): with
    # tls_client_ca set, clients must present a certificate that CA signed (mutual TLS)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    grace_seconds: float = Field(5.0, ge=0)            # running calls may finish this long on SIGTERM
    # how the service learns of promotions: Redis pub/sub when OMNIFORGE_REDIS_URL is set,
    # and polling the registry every poll_seconds in any case (0 = never)
    redis_url: str | None = Field(None, validation_alias=AliasChoices("OMNIFORGE_REDIS_URL", "redis_url"))
    poll_seconds: float = Field(5.0, ge=0)

    @model_validator(mode="after")
    def _tls_pair(self):
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set both TLS_CERT and TLS_KEY (PEM files), or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("TLS_CLIENT_CA (mutual TLS) needs TLS_CERT and TLS_KEY as well")
        return self

    def server_credentials(self):
        """grpc server credentials when TLS is configured, else None (a plain port)."""
        if self.tls_cert is None:
            return None
        import grpc

        ca = self.tls_client_ca.read_bytes() if self.tls_client_ca else None
        return grpc.ssl_server_credentials([(self.tls_key.read_bytes(), self.tls_cert.read_bytes())],
                                           root_certificates=ca, require_client_auth=ca is not None)
