from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from omniforge_shared.serving import ServiceSettings


class TextServiceSettings(ServiceSettings):
    """Text service settings, from OMNIFORGE_TEXT_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="OMNIFORGE_TEXT_", protected_namespaces=())

    port: int = Field(50051, ge=0, le=65535)
    metrics_port: int = Field(9101, ge=0, le=65535)
    backend: Literal["onnxruntime", "torch", "triton"] = "onnxruntime"   # torch: with omniforge-training
    triton_url: str = "127.0.0.1:8001"                 # Triton's gRPC address, for backend=triton
    int8: bool = False
    # LoRA bundles: "merged" serves their merged ONNX graph; "adapter" (torch backend) puts the
    # adapter on top of its base model's weights
    adapters: Literal["merged", "adapter"] = "merged"
    max_batch_size: int = Field(16, ge=1, le=256)
    max_tokens_limit: int = Field(1024, ge=1)
