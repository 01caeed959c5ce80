"""Request schemas of the OpenAI-compatible API (/v1/...), in the field names of OpenAI's
published API. A field we cannot honour is refused with a message naming it, never ignored;
fields OpenAI's client sends by default (user, encoding_format, ...) are accepted."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictBool, StrictInt, StrictStr, field_validator, model_validator

from .schemas import MAX_EMBED_INPUTS, RequestModel

MAX_CHOICES = 8
MAX_STOPS = 4


def _stops(v) -> list[str]:
    if v is None:
        return []
    v = [v] if isinstance(v, str) else v
    if len(v) > MAX_STOPS or any(not s for s in v):
        raise ValueError(f"stop takes up to {MAX_STOPS} non-empty strings")
    return v


class StreamOptions(RequestModel):
    include_usage: StrictBool = False


class _Sampling(RequestModel):
    """What completions and chat completions share."""
    model: StrictStr = Field(description="a model id from GET /v1/models")
    temperature: float = Field(1.0, ge=0, le=2, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    n: StrictInt = Field(1, ge=1, le=MAX_CHOICES)
    stop: list[StrictStr] | StrictStr | None = None
    seed: StrictInt | None = Field(None, ge=0, lt=2**63)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    user: StrictStr | None = None
    presence_penalty: float = Field(0.0, ge=-2, le=2, allow_inf_nan=False)
    frequency_penalty: float = Field(0.0, ge=-2, le=2, allow_inf_nan=False)
    logprobs: StrictBool | StrictInt | None = None
    logit_bias: dict | None = None
    # ours, beyond OpenAI's fields (the openai client sends them with extra_body)
    top_k: StrictInt = Field(0, ge=0)
    repetition_penalty: float = Field(1.0, gt=0, le=10, allow_inf_nan=False)

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v):
        return _stops(v)

    @model_validator(mode="after")
    def _honoured(self):
        refused = [name for name, off in (("presence_penalty", 0.0), ("frequency_penalty", 0.0))
                   if getattr(self, name) != off]
        if refused:
            raise ValueError(f"{', '.join(refused)} not supported; send 0 (or repetition_penalty, ours, > 1)")
        if self.logprobs not in (None, False, 0):
            raise ValueError("logprobs are not returned by this server; leave logprobs unset")
        if self.logit_bias:
            raise ValueError("logit_bias is not supported; leave it unset")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options needs stream: true")
        return self

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_Sampling):
    prompt: StrictStr | list[StrictStr] = Field(description="a text, or a list of texts (a completion each)")
    max_tokens: StrictInt | None = Field(16, ge=1)
    echo: StrictBool = False
    suffix: StrictStr | None = None
    best_of: StrictInt | None = None

    @model_validator(mode="after")
    def _completions_only(self):
        if isinstance(self.prompt, list) and not 1 <= len(self.prompt) * self.n <= 32:
            raise ValueError("send 1 to 32 prompts x n in one request")
        if self.suffix:
            raise ValueError("suffix (insertion) is not supported; leave it unset")
        if self.best_of not in (None, 1):
            raise ValueError("best_of is not supported; send n for several completions")
        return self


class TextPart(RequestModel):
    type: Literal["text"]
    text: StrictStr


class ImageURL(RequestModel):
    url: StrictStr = Field(description="a data: URL, data:image/png;base64,...")
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(RequestModel):
    type: Literal["image_url"]
    image_url: ImageURL


class ChatMessageIn(RequestModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: StrictStr | list[TextPart | ImagePart] | None = None
    name: StrictStr | None = None

    @field_validator("role", mode="before")
    @classmethod
    def _known_role(cls, v):
        if v in ("tool", "function"):
            raise ValueError(f"role {v!r} is not supported (this server calls no tools); send system, user or "
                             "assistant messages")
        return v


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_tokens: StrictInt | None = Field(None, ge=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    response_format: dict | None = None
    tools: list | None = None
    tool_choice: StrictStr | dict | None = None

    @model_validator(mode="after")
    def _chat_only(self):
        if self.tools or self.tool_choice not in (None, "none"):
            raise ValueError("tools are not supported by this server; leave tools and tool_choice unset")
        if self.response_format and self.response_format.get("type") != "text":
            raise ValueError("response_format supports only {\"type\": \"text\"}")
        return self

    @property
    def token_limit(self) -> int:
        return self.max_completion_tokens or self.max_tokens or 64


class EmbeddingsRequest(RequestModel):
    input: StrictStr | list[StrictStr] = Field(description="a text or a list of texts")
    model: StrictStr
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = Field(None, ge=1)
    user: StrictStr | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _texts(cls, v):
        if isinstance(v, list) and v and not isinstance(v[0], str):
            raise ValueError("token ids are not accepted; send the text itself")
        if isinstance(v, list) and not 1 <= len(v) <= MAX_EMBED_INPUTS:
            raise ValueError(f"input holds {len(v)} texts; send 1 to {MAX_EMBED_INPUTS}")
        return v


SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")


class SpeechCreate(RequestModel):
    model: StrictStr
    input: StrictStr = Field(min_length=1, description="what to say (at most 4,096 characters, as OpenAI's)")
    voice: StrictStr = Field(description="a voice id from GET /voices")
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(1.0, ge=0.5, le=2.0, allow_inf_nan=False,
                         description="0.5-2.0 (our voices' range; OpenAI's is 0.25-4.0)")
    instructions: StrictStr | None = None
    stream_format: Literal["audio"] | None = None

    @model_validator(mode="after")
    def _speech_only(self):
        if len(self.input) > 4096:
            raise ValueError(f"input is {len(self.input):,} characters; send at most 4,096 (or use POST /speech)")
        if self.instructions:
            raise ValueError("instructions are not supported by these voices; leave them unset")
        return self
