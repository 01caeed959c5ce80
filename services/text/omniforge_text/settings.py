from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from omniforge_shared.serving import ServiceSettings


class TextServiceSettings(ServiceSettings):
    """Text service settings, from OMNIFORGE_TEXT_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="OMNIFORGE_TEXT_", protected_namespaces=())

    backend: Literal["onnxruntime", "torch", "triton"] = "onnxruntime"   # torch: with omniforge-training
    triton_url: str = "127.0.0.1:8001"                 # Triton's gRPC address, for backend=triton
    int8: bool = False
    # onnxruntime's worker threads spin between ops instead of sleeping: a decode step is a few
    # milliseconds of many small ops, and waking a sleeping thread for each cost 20-25 % of the
    # tokens delivered under load, even with the gateway on the same two cores (bench served)
    spin_wait: bool = True
    # LoRA bundles: "merged" serves their merged ONNX graph; "adapter" (torch backend) puts the
    # adapter on top of its base model's weights
    adapters: Literal["merged", "adapter"] = "merged"
    max_batch_size: int = Field(16, ge=1, le=256)
    max_tokens_limit: int = Field(1024, ge=1)
    # a stream hands out its new text at most this often (the first piece at once): under load a
    # message carries a few tokens instead of one (0 = every token its own message)
    stream_interval_ms: float = Field(20.0, ge=0, le=1000)
    # a prompt of at most this many tokens joins a running batch and is fed a token a decode step,
    # instead of a prefill step that stalls every running sequence (0: prefill every prompt)
    feed_prompt_tokens: int = Field(8, ge=0, le=64)
