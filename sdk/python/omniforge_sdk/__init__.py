"""Python client for the omniforge gateway (depends on httpx only).

    from omniforge_sdk import Client
    client = Client()                          # http://127.0.0.1:8000; api_key= or OMNIFORGE_API_KEY when keys are on
    print(client.generate(prompt="ROMEO:", max_tokens=40).text)
    for chunk in client.generate(prompt="ROMEO:", stream=True):
        print(chunk.text, end="")
    vectors = client.embeddings.create(input=["a red heart", "a cat"]).vectors
    hits = client.search(image="photo.png", k=5)
    wav = client.speech(text="Hello there.")                   # bytes; client.transcribe(audio=wav).text
"""
from ._client import AsyncClient, Client
from ._errors import (APIConnectionError, APIError, AuthenticationError, BadRequestError, InternalServerError,
                      NotFoundError, OmniforgeError, PermissionDeniedError, RateLimitError, ServiceUnavailableError,
                      TimeoutError_)
from ._types import (ApiKey, Caption, Collection, Dataset, Embeddings, GeneratedImage, Generation, GenerationChunk, Model, SearchResult,
                     TrainingJob, Transcription, Usage, Voice)

__all__ = ["AsyncClient", "Client", "APIConnectionError", "APIError", "AuthenticationError", "BadRequestError",
           "InternalServerError", "NotFoundError", "PermissionDeniedError", "OmniforgeError", "RateLimitError", "ServiceUnavailableError", "TimeoutError_",
           "ApiKey", "Caption", "Collection", "Dataset", "Embeddings", "GeneratedImage", "Generation", "GenerationChunk", "Model", "SearchResult",
           "TrainingJob", "Transcription", "Usage", "Voice"]
