from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

INVALID_UNICODE = "invalid_unicode"


def _unpaired_surrogate(value, path: str = "") -> str | None:
    """Where a JSON value holds text that is not valid Unicode (an unpaired UTF-16 surrogate
    escape such as "\\ud800" decodes to one), or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            return f"{path or 'body'} holds an unpaired UTF-16 surrogate ({value[e.start]!r} at character {e.start})"
    elif isinstance(value, dict):
        for key, item in value.items():
            found = _unpaired_surrogate(key, f"{path}.{key!r} (a key)" if path else f"{key!r} (a key)") \
                or _unpaired_surrogate(item, f"{path}.{key}" if path else str(key))
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _unpaired_surrogate(item, f"{path}[{i}]")
            if found:
                return found
    return None


class RequestModel(BaseModel):
    """Base of every request body: JSON that is valid but not valid Unicode is refused with a
    400 before any of its text reaches the tokenizer, protobuf or the database."""
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data):
        found = _unpaired_surrogate(data)
        if found:
            raise PydanticCustomError(INVALID_UNICODE, "{where}; send text that is valid Unicode (UTF-8)",
                                      {"where": found})
        return data


class GenerateRequest(RequestModel):

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


# ---- the shared latent space: /embed, /search, /collections ---------------------------------

MAX_EMBED_INPUTS = 256


class EmbedRequest(RequestModel):
    input: StrictStr | list[StrictStr] | None = Field(None, description="a text or a list of texts")
    image: StrictStr | None = Field(None, description="a base64 image (or send a multipart `file`)")
    audio: StrictStr | None = Field(None, description="a base64 audio clip, a spoken query (or a multipart `file`)")
    model: StrictStr | None = Field(None, description="embedding model; default: the service's first")

    @model_validator(mode="after")
    def _one_kind(self):
        if isinstance(self.input, list) and not 1 <= len(self.input) <= MAX_EMBED_INPUTS:
            raise ValueError(f"input holds {len(self.input)} texts; send 1 to {MAX_EMBED_INPUTS}")
        return self


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float]
    index: int


class EmbedResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    model_version: str
    dimensions: int


class SearchRequest(RequestModel):
    query: StrictStr | None = Field(None, description="search by text")
    image: StrictStr | None = Field(None, description="search by a base64 image (or send a multipart `file`)")
    audio: StrictStr | None = Field(None, description="search by a base64 audio clip: a spoken query")
    k: StrictInt = Field(5, ge=1, le=100, description="how many results")
    collection: StrictStr | None = Field(None, description="default: the starter collection")
    model: StrictStr | None = None


class SearchResult(BaseModel):
    id: str
    caption: str
    score: float
    metadata: dict


class SearchResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    results: list[SearchResult]
    collection: str
    model: str
    model_version: str


class ItemIn(RequestModel):
    id: StrictStr = Field(min_length=1, max_length=256)
    caption: StrictStr = Field("", max_length=2000, description="indexed when no image is given")
    image: StrictStr | None = Field(None, description="a base64 image; embedded when given")
    metadata: dict[StrictStr, StrictStr | StrictBool | StrictInt | float] = Field(default_factory=dict)


class ItemsAdd(RequestModel):
    items: list[ItemIn] = Field(min_length=1, max_length=MAX_EMBED_INPUTS)
    model: StrictStr | None = None


class ItemsDelete(RequestModel):
    ids: list[StrictStr] = Field(min_length=1, max_length=10_000)


class ItemsChanged(BaseModel):
    collection: str
    added: int = 0
    deleted: int = 0
    count: int


class CollectionPublic(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    count: int
    model: str
    model_version: str


class CollectionList(BaseModel):
    collections: list[CollectionPublic]


class CaptionRequest(RequestModel):
    image: StrictStr | None = Field(None, description="a base64 image (or send a multipart `file`)")
    prompt: StrictStr = Field("", max_length=200, description='steers the caption, e.g. "describe the colours"')
    model: StrictStr | None = None
    max_tokens: StrictInt = Field(24, ge=1, le=64)
    temperature: float = Field(0.0, ge=0, le=5, allow_inf_nan=False, description="0 = greedy")
    top_k: StrictInt = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    num_beams: StrictInt = Field(1, ge=1, le=8, description="> 1 = beam search")
    seed: StrictInt | None = Field(None, ge=0, lt=2**63)


class CaptionResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    caption: str
    finish_reason: Literal["stop", "length"]
    model: str
    model_version: str


class ImageGenerationRequest(RequestModel):
    """OpenAI's images.generate request, plus the sampler's own settings."""
    prompt: StrictStr = Field(min_length=1, max_length=1000)
    model: StrictStr | None = None
    n: StrictInt = Field(1, ge=1, le=8)
    size: StrictStr | None = Field(None, description='"WxH", square: the model\'s own size or a multiple of it')
    response_format: Literal["b64_json", "url"] = "b64_json"
    user: StrictStr | None = Field(None, description="accepted for compatibility; not stored")
    steps: StrictInt = Field(25, ge=1, le=200, description="DDIM steps")
    guidance: float = Field(3.0, ge=0, le=30, allow_inf_nan=False, description="classifier-free guidance scale")
    seed: StrictInt | None = Field(None, ge=0, lt=2**62)
    stream: StrictBool = False
    preview_every: StrictInt = Field(0, ge=0, le=200, description="with stream: a preview every this many steps")

    @field_validator("size")
    @classmethod
    def _square(cls, v):
        if v is None:
            return v
        w, sep, h = v.partition("x")
        if not sep or not w.isdigit() or not h.isdigit() or w != h:
            raise ValueError(f'size {v!r} is not a square "WxH" such as "64x64"')
        return v


class ImageData(BaseModel):
    b64_json: str
    revised_prompt: str | None = None
    seed: int


class ImageGenerationResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    created: int
    data: list[ImageData]
    model: str
    model_version: str


class TranscribeRequest(RequestModel):
    """POST /transcribe: a multipart `file` with these as form fields, or JSON with `audio` in base64."""
    audio: StrictStr | None = Field(None, description="base64 audio (or send a multipart `file`)")
    model: StrictStr | None = None
    language: StrictStr | None = Field(None, max_length=16, description='"en" (the starter model knows English)')
    timestamps: StrictBool = Field(True, description="word start and end times")
    greedy: StrictBool = Field(False, description="skip the language model: faster, usually less accurate")


class WordOut(BaseModel):
    start: float
    end: float
    word: str


class SegmentOut(BaseModel):
    start: float
    end: float
    text: str


class TranscribeResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    text: str
    segments: list[SegmentOut]
    words: list[WordOut]
    duration: float
    language: str
    model: str
    model_version: str


class SpeechRequest(RequestModel):
    """POST /speech (OpenAI's audio.speech fields where they exist: `input` is accepted for `text`)."""
    text: StrictStr = Field(description="what to say; long text is split by sentence (at most 20,000 characters)")
    voice: StrictStr | None = Field(None, max_length=64, description="a voice id from GET /voices")
    speed: float = Field(1.0, ge=0.5, le=2.0, allow_inf_nan=False, description="0.5-2.0")
    format: Literal["wav", "flac", "pcm", "mp3"] = Field("wav", description="pcm: 16-bit little-endian mono")
    stream: StrictBool = Field(False, description="send the audio as it is made (wav or pcm)")
    model: StrictStr | None = None

    @model_validator(mode="before")
    @classmethod
    def _openai_names(cls, data):
        if isinstance(data, dict):
            data = dict(data)
            if "input" in data and "text" not in data:
                data["text"] = data.pop("input")
            if "response_format" in data and "format" not in data:
                data["format"] = data.pop("response_format")
        return data


class VoiceOut(BaseModel):
    id: str
    name: str
    language: str
    gender: str
    sample_rate: int
    model: str


class VoicesResponse(BaseModel):
    voices: list[VoiceOut]
