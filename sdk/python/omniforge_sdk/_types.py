from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: str
    model: str
    model_version: str
    usage: Usage

    @classmethod
    def from_json(cls, d: dict) -> "Generation":
        return cls(d["text"], d["finish_reason"], d["model"], d["model_version"], Usage(**d["usage"]))


@dataclass(frozen=True)
class GenerationChunk:
    text: str
    finish_reason: str | None
    model: str
    model_version: str
    usage: Usage | None = None

    @classmethod
    def from_json(cls, d: dict) -> "GenerationChunk":
        usage = Usage(**d["usage"]) if d.get("usage") else None
        return cls(d["text"], d.get("finish_reason"), d.get("model", ""), d.get("model_version", ""), usage)


@dataclass(frozen=True)
class Model:
    name: str
    version: str
    task: str
    backend: str
    service: str
    context_length: int
    vocab_size: int
    metrics: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingJob:
    id: str
    recipe: str
    dataset: str
    model_name: str
    state: str
    step: int
    max_steps: int
    progress: float
    eta_s: float | None
    metrics: dict
    result: dict
    error: str | None
    attempts: int
    params: dict
    resources: dict
    created_at: str
    started_at: str | None
    finished_at: str | None

    @property
    def done(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class Embeddings:
    """Unit-length vectors in the shared space, one per input, in order."""
    vectors: list[list[float]]
    model: str
    model_version: str
    dimensions: int

    @classmethod
    def from_json(cls, d: dict) -> "Embeddings":
        return cls(vectors=[e["embedding"] for e in sorted(d["data"], key=lambda e: e["index"])], model=d["model"],
                   model_version=d["model_version"], dimensions=d["dimensions"])


@dataclass(frozen=True)
class SearchResult:
    id: str
    caption: str
    score: float
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Collection:
    name: str
    count: int
    model: str
    model_version: str


@dataclass(frozen=True)
class Caption:
    caption: str
    finish_reason: str
    model: str
    model_version: str


@dataclass(frozen=True)
class GeneratedImage:
    png: bytes
    seed: int


@dataclass(frozen=True)
class Transcription:
    text: str
    segments: list[dict]
    words: list[dict]
    duration: float
    language: str
    model: str
    model_version: str


@dataclass(frozen=True)
class Voice:
    id: str
    name: str
    language: str
    gender: str
    sample_rate: int
    model: str


@dataclass(frozen=True)
class Dataset:
    name: str
    version: str
    format: str
    counts: dict
    content_hash: str
    created_at: str


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    scopes: list
    rate_limit_per_minute: int | None
    quota_per_day: int | None
    created_at: str
    revoked_at: str | None = None
    last_used_at: str | None = None
    key: str | None = None          # the secret: only in the reply that created it
