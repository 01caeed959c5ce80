from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    prompt: StrictStr = Field(description="text to continue")
    model: StrictStr | None = Field(None, description="model name; default: the service's first model")
    max_tokens: StrictInt = Field(64, ge=1, description="tokens to generate")
    temperature: float = Field(0.8, ge=0, le=10, allow_inf_nan=False, description="0 = greedy")
    top_k: StrictInt = Field(0, ge=0, description="0 = off")
    top_p: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    repetition_penalty: float = Field(1.0, gt=0, le=10, allow_inf_nan=False)
    stop: list[StrictStr] | StrictStr | None = Field(None, description="stop before any of these strings")
    seed: StrictInt | None = Field(None, ge=0, lt=2**63, description="same seed, same output")
    stream: StrictBool = False

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v):
        if v is None:
            return []
        return [v] if isinstance(v, str) else v


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class GenerateResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    text: str
    finish_reason: Literal["length", "stop"]
    model: str
    model_version: str
    usage: Usage


class ModelPublic(BaseModel):
    name: str
    version: str
    task: str
    backend: str
    service: str
    context_length: int
    vocab_size: int
    metrics: dict[str, float]


class ModelList(BaseModel):
    models: list[ModelPublic]
