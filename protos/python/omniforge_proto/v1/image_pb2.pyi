from omniforge_proto.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GenerateImagesRequest(_message.Message):
    __slots__ = ("model", "prompt", "n", "steps", "guidance", "seed", "preview_every", "size")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_EVERY_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelRef
    prompt: str
    n: int
    steps: int
    guidance: float
    seed: int
    preview_every: int
    size: int
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., prompt: _Optional[str] = ..., n: _Optional[int] = ..., steps: _Optional[int] = ..., guidance: _Optional[float] = ..., seed: _Optional[int] = ..., preview_every: _Optional[int] = ..., size: _Optional[int] = ...) -> None: ...

class GenerationProgress(_message.Message):
    __slots__ = ("step", "steps", "previews")
    STEP_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    PREVIEWS_FIELD_NUMBER: _ClassVar[int]
    step: int
    steps: int
    previews: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, step: _Optional[int] = ..., steps: _Optional[int] = ..., previews: _Optional[_Iterable[bytes]] = ...) -> None: ...

class GeneratedImage(_message.Message):
    __slots__ = ("index", "png", "seed")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    index: int
    png: bytes
    seed: int
    def __init__(self, index: _Optional[int] = ..., png: _Optional[bytes] = ..., seed: _Optional[int] = ...) -> None: ...

class GenerateImagesEvent(_message.Message):
    __slots__ = ("progress", "image", "model", "model_version")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    progress: GenerationProgress
    image: GeneratedImage
    model: str
    model_version: str
    def __init__(self, progress: _Optional[_Union[GenerationProgress, _Mapping]] = ..., image: _Optional[_Union[GeneratedImage, _Mapping]] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class EncodeImagesRequest(_message.Message):
    __slots__ = ("model", "images")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelRef
    images: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., images: _Optional[_Iterable[bytes]] = ...) -> None: ...

class EncodeImagesResponse(_message.Message):
    __slots__ = ("embeddings", "dimensions", "model", "model_version")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[_common_pb2.Embedding]
    dimensions: int
    model: str
    model_version: str
    def __init__(self, embeddings: _Optional[_Iterable[_Union[_common_pb2.Embedding, _Mapping]]] = ..., dimensions: _Optional[int] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...
