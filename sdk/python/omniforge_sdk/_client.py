from __future__ import annotations

import json
import os
from typing import AsyncIterator, Iterator

import httpx

from ._errors import APIConnectionError, OmniforgeError, error_for
from ._types import (Caption, Collection, Embeddings, GeneratedImage, Generation, GenerationChunk, Model,
                     SearchResult, TrainingJob, Transcription, Voice)

DEFAULT_BASE_URL = "http://127.0.0.1:8000"


def _base_url(base_url: str | None) -> str:
    return (base_url or os.environ.get("OMNIFORGE_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def _auth_headers(api_key: str | None) -> dict[str, str]:
    """The API key (argument, else OMNIFORGE_API_KEY) as a bearer token; none for a local run without keys."""
    key = api_key or os.environ.get("OMNIFORGE_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def _generate_body(prompt, model, max_tokens, temperature, top_k, top_p, repetition_penalty, stop, seed,
                   stream) -> dict:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": temperature, "top_k": top_k,
            "top_p": top_p, "repetition_penalty": repetition_penalty, "stream": stream}
    if model is not None:
        body["model"] = model
    if stop is not None:
        body["stop"] = stop
    if seed is not None:
        body["seed"] = seed
    return body


def _raise_for(response: httpx.Response) -> None:
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = None
        raise error_for(response.status_code, body, response.headers)


class _SSEParser:
    """Server-Sent Events, a line at a time -> chunks; `event: error` raises the matching APIError."""

    def __init__(self) -> None:
        self.event = "message"
        self.done = False

    def feed(self, line: str) -> GenerationChunk | None:
        if line.startswith("event:"):
            self.event = line[6:].strip()
            return None
        if not line.startswith("data:"):
            return None
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return None
        payload = json.loads(data)
        if self.event == "error":
            err = payload.get("error", {})
            status = {"service_unavailable": 503, "timeout": 504}.get(err.get("code"), 500)
            raise error_for(status, payload, {})
        self.event = "message"
        return GenerationChunk.from_json(payload)


def _image_b64(image) -> str:
    """bytes, a path, or a file object -> base64 text for a JSON body."""
    import base64
    from pathlib import Path

    if isinstance(image, (str, Path)):
        image = Path(image).read_bytes()
    elif hasattr(image, "read"):
        image = image.read()
    return base64.b64encode(image).decode()


def _audio_file(audio) -> tuple[str, bytes]:
    """bytes, a path, or a file object -> (file name, bytes) for a multipart upload."""
    from pathlib import Path

    if isinstance(audio, (str, Path)):
        return Path(audio).name, Path(audio).read_bytes()
    if hasattr(audio, "read"):
        return Path(getattr(audio, "name", "audio.wav")).name, audio.read()
    return "audio.wav", bytes(audio)


def _transcribe_form(language, timestamps, greedy) -> dict:
    form = {"timestamps": json.dumps(timestamps), "greedy": json.dumps(greedy)}
    if language:
        form["language"] = language
    return form


def _speech_body(text, voice, speed, format, model) -> dict:
    body = {"text": text, "speed": speed, "format": format}
    if voice:
        body["voice"] = voice
    if model:
        body["model"] = model
    return body


def _one_of(text_name: str, text, image, audio) -> dict:
    given = [x is not None for x in (text, image, audio)]
    if sum(given) != 1:
        raise ValueError(f"give exactly one of {text_name}= (text), image= (bytes or a path) or audio= "
                         "(a spoken query: bytes or a path)")
    if text is not None:
        return {text_name: text}
    return {"image": _image_b64(image)} if image is not None else {"audio": _image_b64(audio)}


def _embed_body(input, image, model, audio=None) -> dict:
    return {**_one_of("input", input, image, audio), **({"model": model} if model else {})}


def _search_body(query, image, k, collection, model, audio=None) -> dict:
    return {**_one_of("query", query, image, audio), "k": k, **({"collection": collection} if collection else {}),
            **({"model": model} if model else {})}


def _items_body(items: list[dict]) -> dict:
    """[{"id", "caption"?, "image"? (bytes or path), "metadata"?}] -> the JSON body."""
    return {"items": [{**{k: v for k, v in it.items() if k != "image"},
                       **({"image": _image_b64(it["image"])} if it.get("image") is not None else {})}
                      for it in items]}


def _caption_body(image, prompt, options) -> dict:
    return {"image": _image_b64(image), **({"prompt": prompt} if prompt else {}),
            **{k: v for k, v in options.items() if v is not None}}


def _images_body(prompt, n, size, steps, guidance, seed) -> dict:
    body = {"prompt": prompt, "n": n, "steps": steps, "guidance": guidance, "response_format": "b64_json"}
    return {**body, **({"size": size} if size else {}), **({"seed": seed} if seed is not None else {})}


def _images(payload: dict) -> list[GeneratedImage]:
    import base64

    return [GeneratedImage(png=base64.b64decode(d["b64_json"]), seed=d["seed"]) for d in payload["data"]]


class _Images:
    def __init__(self, client: "Client") -> None:
        self._client = client

    def generate(self, *, prompt: str, n: int = 1, size: str | None = None, steps: int = 25,
                 guidance: float = 3.0, seed: int | None = None) -> list[GeneratedImage]:
        """PNG images from a prompt (same seed, same images)."""
        body = _images_body(prompt, n, size, steps, guidance, seed)
        return _images(self._client._request("POST", "/images/generations", json=body).json())


class _Embeddings:
    def __init__(self, client: "Client") -> None:
        self._client = client

    def create(self, *, input: str | list[str] | None = None, image=None, audio=None,
               model: str | None = None) -> Embeddings:
        """Texts, an image or a spoken query (audio bytes or a path) -> unit vectors in the shared space."""
        return Embeddings.from_json(self._client._request("POST", "/embed",
                                                          json=_embed_body(input, image, model, audio)).json())


class _Collections:
    def __init__(self, client: "Client") -> None:
        self._client = client

    def list(self) -> list[Collection]:
        return [Collection(**c) for c in self._client._request("GET", "/collections").json()["collections"]]

    def add(self, name: str, *, items: list[dict]) -> int:
        """Adds or replaces items; returns the collection's size afterwards."""
        return self._client._request("POST", f"/collections/{name}/items", json=_items_body(items)).json()["count"]

    def delete(self, name: str, *, ids: list[str]) -> int:
        """Deletes items by id; returns how many were there."""
        return self._client._request("DELETE", f"/collections/{name}/items", json={"ids": ids}).json()["deleted"]


class _Models:
    def __init__(self, client: "Client") -> None:
        self._client = client

    def list(self) -> list[Model]:
        return [Model(**m) for m in self._client._request("GET", "/models").json()["models"]]


class _Jobs:
    """client.training.jobs: submit, inspect, follow and cancel training jobs."""

    def __init__(self, client: "Client") -> None:
        self._client = client

    def create(self, *, recipe: str, dataset: str, params: dict | None = None, model_name: str | None = None,
               queue: str = "cpu") -> TrainingJob:
        body = {"recipe": recipe, "dataset": dataset, "params": params or {}, "resources": {"queue": queue}}
        if model_name:
            body["model_name"] = model_name
        return TrainingJob(**self._client._request("POST", "/training/jobs", json=body).json())

    def retrieve(self, job_id: str) -> TrainingJob:
        return TrainingJob(**self._client._request("GET", f"/training/jobs/{job_id}").json())

    def list(self, *, state: str | None = None) -> list[TrainingJob]:
        params = {"state": state} if state else {}
        return [TrainingJob(**j) for j in self._client._request("GET", "/training/jobs", params=params).json()]

    def logs(self, job_id: str, *, after: int = 0) -> list[dict]:
        return self._client._request("GET", f"/training/jobs/{job_id}/logs", params={"after": after}).json()["lines"]

    def metrics(self, job_id: str, *, name: str | None = None) -> list[dict]:
        params = {"name": name} if name else {}
        return self._client._request("GET", f"/training/jobs/{job_id}/metrics", params=params).json()["history"]

    def cancel(self, job_id: str) -> TrainingJob:
        return TrainingJob(**self._client._request("POST", f"/training/jobs/{job_id}/cancel").json())

    def wait(self, job_id: str, *, timeout: float = 3600.0, poll_s: float = 1.0) -> TrainingJob:
        import time

        deadline = time.time() + timeout
        while True:
            job = self.retrieve(job_id)
            if job.done or time.time() > deadline:
                return job
            time.sleep(poll_s)


class _Training:
    def __init__(self, client: "Client") -> None:
        self.jobs = _Jobs(client)


class Client:
    """Synchronous client. Keyword arguments only; one exception class per kind of failure."""

    def __init__(self, *, base_url: str | None = None, api_key: str | None = None, timeout: float = 300.0,
                 http_client: httpx.Client | None = None) -> None:
        self.base_url = _base_url(base_url)
        self._http = http_client or httpx.Client(base_url=self.base_url, timeout=timeout,
                                                 headers=_auth_headers(api_key))
        self.models = _Models(self)
        self.training = _Training(self)
        self.embeddings = _Embeddings(self)
        self.collections = _Collections(self)
        self.images = _Images(self)

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise APIConnectionError(f"cannot reach {self.base_url}: {e}") from e
        _raise_for(response)
        return response

    def generate(self, *, prompt: str, model: str | None = None, max_tokens: int = 64, temperature: float = 0.8,
                 top_k: int = 0, top_p: float = 1.0, repetition_penalty: float = 1.0,
                 stop: str | list[str] | None = None, seed: int | None = None, stream: bool = False):
        """Returns a Generation, or with stream=True an iterator of GenerationChunk."""
        body = _generate_body(prompt, model, max_tokens, temperature, top_k, top_p, repetition_penalty, stop,
                              seed, stream)
        if stream:
            return self._stream(body)
        return Generation.from_json(self._request("POST", "/generate", json=body).json())

    def _stream(self, body: dict) -> Iterator[GenerationChunk]:
        try:
            with self._http.stream("POST", "/generate", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for(response)
                parser = _SSEParser()
                for line in response.iter_lines():
                    chunk = parser.feed(line)
                    if chunk is not None:
                        yield chunk
                    if parser.done:
                        return
        except httpx.TransportError as e:
            raise APIConnectionError(f"cannot reach {self.base_url}: {e}") from e

    def search(self, *, query: str | None = None, image=None, audio=None, k: int = 5, collection: str | None = None,
               model: str | None = None) -> list[SearchResult]:
        """The k items of a collection (default: the starter one) nearest to a text, an image or a spoken query."""
        body = _search_body(query, image, k, collection, model, audio)
        return [SearchResult(**r) for r in self._request("POST", "/search", json=body).json()["results"]]

    def caption(self, *, image, prompt: str | None = None, max_tokens: int | None = None,
                temperature: float | None = None, num_beams: int | None = None, seed: int | None = None) -> Caption:
        """Describes an image (bytes, a path or a file object); `prompt` steers it."""
        body = _caption_body(image, prompt, dict(max_tokens=max_tokens, temperature=temperature,
                                                 num_beams=num_beams, seed=seed))
        return Caption(**self._request("POST", "/caption", json=body).json())

    def transcribe(self, *, audio, language: str | None = None, timestamps: bool = True,
                   greedy: bool = False) -> Transcription:
        """Speech (bytes, a path or a file object: WAV, FLAC, OGG; MP3, M4A, WebM with ffmpeg) -> text,
        segments and word times."""
        name, data = _audio_file(audio)
        r = self._request("POST", "/transcribe", files={"file": (name, data)},
                          data=_transcribe_form(language, timestamps, greedy))
        return Transcription(**r.json())

    def speech(self, *, text: str, voice: str | None = None, speed: float = 1.0, format: str = "wav",
               model: str | None = None) -> bytes:
        """Text -> audio bytes in `format` (wav, flac, pcm: 16-bit mono, mp3)."""
        return self._request("POST", "/speech", json=_speech_body(text, voice, speed, format, model)).content

    def speech_stream(self, *, text: str, voice: str | None = None, speed: float = 1.0, format: str = "pcm",
                      model: str | None = None) -> Iterator[bytes]:
        """Text -> audio bytes as they are made (pcm, or wav with a streaming header)."""
        body = {**_speech_body(text, voice, speed, format, model), "stream": True}
        try:
            with self._http.stream("POST", "/speech", json=body) as r:
                if r.status_code >= 400:
                    r.read()
                    _raise_for(r)
                yield from r.iter_bytes()
        except httpx.TransportError as e:
            raise APIConnectionError(str(e)) from e

    def voices(self) -> list[Voice]:
        return [Voice(**v) for v in self._request("GET", "/voices").json()["voices"]]

    def health(self) -> bool:
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _AsyncModels:
    def __init__(self, client: "AsyncClient") -> None:
        self._client = client

    async def list(self) -> list[Model]:
        response = await self._client._request("GET", "/models")
        return [Model(**m) for m in response.json()["models"]]


class _AsyncJobs:
    """The asynchronous twin of client.training.jobs."""

    def __init__(self, client: "AsyncClient") -> None:
        self._client = client

    async def create(self, *, recipe: str, dataset: str, params: dict | None = None,
                     model_name: str | None = None, queue: str = "cpu") -> TrainingJob:
        body = {"recipe": recipe, "dataset": dataset, "params": params or {}, "resources": {"queue": queue}}
        if model_name:
            body["model_name"] = model_name
        return TrainingJob(**(await self._client._request("POST", "/training/jobs", json=body)).json())

    async def retrieve(self, job_id: str) -> TrainingJob:
        return TrainingJob(**(await self._client._request("GET", f"/training/jobs/{job_id}")).json())

    async def list(self, *, state: str | None = None) -> list[TrainingJob]:
        params = {"state": state} if state else {}
        response = await self._client._request("GET", "/training/jobs", params=params)
        return [TrainingJob(**j) for j in response.json()]

    async def logs(self, job_id: str, *, after: int = 0) -> list[dict]:
        response = await self._client._request("GET", f"/training/jobs/{job_id}/logs", params={"after": after})
        return response.json()["lines"]

    async def metrics(self, job_id: str, *, name: str | None = None) -> list[dict]:
        params = {"name": name} if name else {}
        response = await self._client._request("GET", f"/training/jobs/{job_id}/metrics", params=params)
        return response.json()["history"]

    async def cancel(self, job_id: str) -> TrainingJob:
        return TrainingJob(**(await self._client._request("POST", f"/training/jobs/{job_id}/cancel")).json())

    async def wait(self, job_id: str, *, timeout: float = 3600.0, poll_s: float = 1.0) -> TrainingJob:
        import asyncio
        import time

        deadline = time.time() + timeout
        while True:
            job = await self.retrieve(job_id)
            if job.done or time.time() > deadline:
                return job
            await asyncio.sleep(poll_s)


class _AsyncEmbeddings:
    def __init__(self, client: "AsyncClient") -> None:
        self._client = client

    async def create(self, *, input: str | list[str] | None = None, image=None, audio=None,
                     model: str | None = None) -> Embeddings:
        r = await self._client._request("POST", "/embed", json=_embed_body(input, image, model, audio))
        return Embeddings.from_json(r.json())


class _AsyncCollections:
    def __init__(self, client: "AsyncClient") -> None:
        self._client = client

    async def list(self) -> list[Collection]:
        return [Collection(**c) for c in (await self._client._request("GET", "/collections")).json()["collections"]]

    async def add(self, name: str, *, items: list[dict]) -> int:
        return (await self._client._request("POST", f"/collections/{name}/items", json=_items_body(items))).json()["count"]

    async def delete(self, name: str, *, ids: list[str]) -> int:
        return (await self._client._request("DELETE", f"/collections/{name}/items", json={"ids": ids})).json()["deleted"]


class _AsyncImages:
    def __init__(self, client: "AsyncClient") -> None:
        self._client = client

    async def generate(self, *, prompt: str, n: int = 1, size: str | None = None, steps: int = 25,
                       guidance: float = 3.0, seed: int | None = None) -> list[GeneratedImage]:
        body = _images_body(prompt, n, size, steps, guidance, seed)
        return _images((await self._client._request("POST", "/images/generations", json=body)).json())


class _AsyncTraining:
    def __init__(self, client: "AsyncClient") -> None:
        self.jobs = _AsyncJobs(client)


class AsyncClient:
    """The asynchronous twin of Client."""

    def __init__(self, *, base_url: str | None = None, api_key: str | None = None, timeout: float = 300.0,
                 http_client: httpx.AsyncClient | None = None) -> None:
        self.base_url = _base_url(base_url)
        self._http = http_client or httpx.AsyncClient(base_url=self.base_url, timeout=timeout,
                                                      headers=_auth_headers(api_key))
        self.models = _AsyncModels(self)
        self.training = _AsyncTraining(self)
        self.embeddings = _AsyncEmbeddings(self)
        self.collections = _AsyncCollections(self)
        self.images = _AsyncImages(self)

    async def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise APIConnectionError(f"cannot reach {self.base_url}: {e}") from e
        _raise_for(response)
        return response

    async def generate(self, *, prompt: str, model: str | None = None, max_tokens: int = 64,
                       temperature: float = 0.8, top_k: int = 0, top_p: float = 1.0,
                       repetition_penalty: float = 1.0, stop: str | list[str] | None = None,
                       seed: int | None = None, stream: bool = False):
        """Returns a Generation, or with stream=True an async iterator of GenerationChunk."""
        body = _generate_body(prompt, model, max_tokens, temperature, top_k, top_p, repetition_penalty, stop,
                              seed, stream)
        if stream:
            return self._stream(body)
        response = await self._request("POST", "/generate", json=body)
        return Generation.from_json(response.json())

    async def _stream(self, body: dict) -> AsyncIterator[GenerationChunk]:
        try:
            async with self._http.stream("POST", "/generate", json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _raise_for(response)
                parser = _SSEParser()
                async for line in response.aiter_lines():
                    chunk = parser.feed(line)
                    if chunk is not None:
                        yield chunk
                    if parser.done:
                        return
        except httpx.TransportError as e:
            raise APIConnectionError(f"cannot reach {self.base_url}: {e}") from e

    async def caption(self, *, image, prompt: str | None = None, max_tokens: int | None = None,
                      temperature: float | None = None, num_beams: int | None = None,
                      seed: int | None = None) -> Caption:
        body = _caption_body(image, prompt, dict(max_tokens=max_tokens, temperature=temperature,
                                                 num_beams=num_beams, seed=seed))
        return Caption(**(await self._request("POST", "/caption", json=body)).json())

    async def transcribe(self, *, audio, language: str | None = None, timestamps: bool = True,
                         greedy: bool = False) -> Transcription:
        name, data = _audio_file(audio)
        r = await self._request("POST", "/transcribe", files={"file": (name, data)},
                                data=_transcribe_form(language, timestamps, greedy))
        return Transcription(**r.json())

    async def speech(self, *, text: str, voice: str | None = None, speed: float = 1.0, format: str = "wav",
                     model: str | None = None) -> bytes:
        return (await self._request("POST", "/speech", json=_speech_body(text, voice, speed, format, model))).content

    async def voices(self) -> list[Voice]:
        return [Voice(**v) for v in (await self._request("GET", "/voices")).json()["voices"]]

    async def search(self, *, query: str | None = None, image=None, audio=None, k: int = 5,
                     collection: str | None = None, model: str | None = None) -> list[SearchResult]:
        body = _search_body(query, image, k, collection, model, audio)
        return [SearchResult(**r) for r in (await self._request("POST", "/search", json=body)).json()["results"]]

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


__all__ = ["AsyncClient", "Client", "OmniforgeError"]
