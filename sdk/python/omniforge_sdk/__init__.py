"""Python client for the omniforge gateway (depends on httpx only).

    from omniforge_sdk import Client
    client = Client()                                   # http://127.0.0.1:8000
    print(client.generate(prompt="ROMEO:", max_tokens=40).text)
    for chunk in client.generate(prompt="ROMEO:", stream=True):
        print(chunk.text, end="")
"""
from ._client import AsyncClient, Client
from ._errors import (APIConnectionError, APIError, BadRequestError, InternalServerError, NotFoundError,
                      OmniforgeError, RateLimitError, ServiceUnavailableError, TimeoutError_)
from ._types import Generation, GenerationChunk, Model, TrainingJob, Usage

__all__ = ["AsyncClient", "Client", "APIConnectionError", "APIError", "BadRequestError", "InternalServerError",
           "NotFoundError", "OmniforgeError", "RateLimitError", "ServiceUnavailableError", "TimeoutError_",
           "Generation", "GenerationChunk", "Model", "TrainingJob", "Usage"]
