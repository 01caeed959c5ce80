"""Text: one completion, then the same prompt streamed as it is generated.

    OMNIFORGE_BASE_URL=http://127.0.0.1:8000 python generate.py
"""
from omniforge_sdk import Client

with Client() as client:                       # OMNIFORGE_BASE_URL, OMNIFORGE_API_KEY
    result = client.generate(prompt="The history of", max_tokens=40, seed=7)
    print(f"{result.text!r} ({result.usage.completion_tokens} tokens, {result.model}:{result.model_version})")
    for chunk in client.generate(prompt="The history of", max_tokens=40, seed=7, stream=True):
        print(chunk.text, end="", flush=True)
    print()
