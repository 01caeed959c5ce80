from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import AsyncIterator, Iterator

import httpx

from ._errors import APIConnectionError, OmniforgeError, error_for
from ._types import (ApiKey, Caption, Collection, Dataset, Embeddings, GeneratedImage, Generation, GenerationChunk,
                     Model, SearchResult, TrainingJob, Transcription, Voice)

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


RETRY_STATUSES = (429, 503)
MAX_RETRY_WAIT_S = 30.0


def _retry_delay(response: httpx.Response | None, attempt: int) -> float:
    """How long to wait before retry `attempt` (0, 1, ...): the server's Retry-After when it
    sends one (capped), else exponential backoff from half a second."""
    retry_after = response.headers.get("retry-after") if response is not None else None
    try:
        return min(float(retry_after), MAX_RETRY_WAIT_S) if retry_after else 0.5 * 2 ** attempt
    except ValueError:
        return 0.5 * 2 ** attempt


def _retryable(response: httpx.Response | None, error: Exception | None) -> bool:
    return isinstance(error, httpx.ConnectError) or (response is not None and response.status_code in RETRY_STATUSES)


def _upload(file) -> tuple[str, bytes]:
    """A file to upload: a path, bytes or a file object -> (name, bytes)."""
    if isinstance(file, (str, Path)):
        return Path(file).name, Path(file).read_bytes()
    if isinstance(file, (bytes, bytearray)):
        return "upload", bytes(file)
    return Path(getattr(file, "name", "upload")).name, file.read()


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


class _Speech:
    """client.audio.speech: /speech."""

    def __init__(self, client) -> None:
        self._client = client

    def create(self, *, input: str, voice: str | None = None, speed: float = 1.0, format: str = "wav",
               model: str | None = None):
        """Text -> audio bytes (wav, flac, pcm: 16-bit mono, mp3); awaitable on an AsyncClient."""
        return self._client.speech(text=input, voice=voice, speed=speed, format=format, model=model)


class _Transcriptions:
    """client.audio.transcriptions: /transcribe."""

    def __init__(self, client) -> None:
        self._client = client

    def create(self, *, file, language: str | None = None, timestamps: bool = True, greedy: bool = False):
        """Speech (bytes, a path or a file object) -> Transcription; awaitable on an AsyncClient."""
        return self._client.transcribe(audio=file, language=language, timestamps=timestamps, greedy=greedy)


class _Voices:
    def __init__(self, client) -> None:
        self._client = client

    def list(self):
        return self._client.voices()


class _Audio:
    """client.audio.speech, .transcriptions and .voices, for a Client or an AsyncClient."""

    def __init__(self, client) -> None:
        self.speech, self.transcriptions, self.voices = _Speech(client), _Transcriptions(client), _Voices(client)


def _key_body(name, scopes, rate_limit_per_minute, quota_per_day) -> dict:
    return {"name": name, "scopes": list(scopes), "rate_limit_per_minute": rate_limit_per_minute,
            "quota_per_day": quota_per_day}


def _dataset_form(name, tokenizer, val_fraction) -> dict:
    form = {"name": name, "tokenizer": tokenizer}
    if val_fraction is not None:
        form["val_fraction"] = str(val_fraction)
    return form


class _Datasets:
    """client.datasets: /datasets."""

    def __init__(self, client: "Client") -> None:
        self._client = client

    def list(self) -> list[Dataset]:
        return [Dataset(**{**d, "created_at": str(d["created_at"])}) for d in self._client._request("GET", "/datasets").json()]

    def upload(self, *, file, name: str, tokenizer: str = "bpe", val_fraction: float | None = None) -> TrainingJob:
        """Uploads .txt, .jsonl or .parquet; returns the job that builds and registers the dataset."""
        r = self._client._request("POST", "/datasets", files={"file": _upload(file)},
                                  data=_dataset_form(name, tokenizer, val_fraction))
        return TrainingJob(**r.json()["job"])


class _Keys:
    """client.keys: /admin/keys (a key with the admin scope)."""

    def __init__(self, client: "Client") -> None:
        self._client = client

    def create(self, *, name: str, scopes=("inference",), rate_limit_per_minute: int | None = None,
               quota_per_day: int | None = None) -> ApiKey:
        """A new key; its secret is in `.key`, this once."""
        body = _key_body(name, scopes, rate_limit_per_minute, quota_per_day)
        return ApiKey(**self._client._request("POST", "/admin/keys", json=body).json())

    def list(self) -> list[ApiKey]:
        return [ApiKey(**k) for k in self._client._request("GET", "/admin/keys").json()]

    def revoke(self, key_id: str) -> ApiKey:
        return ApiKey(**self._client._request("DELETE", f"/admin/keys/{key_id}").json())


class Client:
    """Synchronous client. Keyword arguments only; one exception class per kind of failure."""

    def __init__(self, *, base_url: str | None = None, api_key: str | None = None, timeout: float = 300.0,
                 max_retries: int = 2, http_client: httpx.Client | None = None) -> None:
        """`api_key`: default OMNIFORGE_API_KEY; `timeout` in seconds a request; `max_retries` of a
        request answered 429 or 503 or refused (0 = none)."""
        self.base_url = _base_url(base_url)
        self.max_retries = max_retries
        self._http = http_client or httpx.Client(base_url=self.base_url, timeout=timeout,
                                                 headers=_auth_headers(api_key))
        self.models = _Models(self)
        self.training = _Training(self)
        self.embeddings = _Embeddings(self)
        self.collections = _Collections(self)
        self.images = _Images(self)
        self.audio = _Audio(self)
        self.datasets = _Datasets(self)
        self.keys = _Keys(self)

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        """One call; 429, 503 and refused connections are retried `max_retries` times, after the
        server's Retry-After or an exponential backoff."""
        for attempt in range(self.max_retries + 1):
            response, error = None, None
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as e:
                error = e
            if attempt < self.max_retries and _retryable(response, error):
                time.sleep(_retry_delay(response, attempt))
                continue
            if error is not None:
                raise APIConnectionError(f"cannot reach {self.base_url}: {error}") from error
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


class _AsyncDatasets:
    def __init__(self, client: "AsyncClient") -> None:
        self._client = client

    async def list(self) -> list[Dataset]:
        r = await self._client._request("GET", "/datasets")
        return [Dataset(**{**d, "created_at": str(d["created_at"])}) for d in r.json()]

    async def upload(self, *, file, name: str, tokenizer: str = "bpe", val_fraction: float | None = None) -> TrainingJob:
        r = await self._client._request("POST", "/datasets", files={"file": _upload(file)},
                                        data=_dataset_form(name, tokenizer, val_fraction))
        return TrainingJob(**r.json()["job"])


class _AsyncKeys:
    def __init__(self, client: "AsyncClient") -> None:
        self._client = client

    async def create(self, *, name: str, scopes=("inference",), rate_limit_per_minute: int | None = None,
                     quota_per_day: int | None = None) -> ApiKey:
        body = _key_body(name, scopes, rate_limit_per_minute, quota_per_day)
        return ApiKey(**(await self._client._request("POST", "/admin/keys", json=body)).json())

    async def list(self) -> list[ApiKey]:
        return [ApiKey(**k) for k in (await self._client._request("GET", "/admin/keys")).json()]

    async def revoke(self, key_id: str) -> ApiKey:
        return ApiKey(**(await self._client._request("DELETE", f"/admin/keys/{key_id}")).json())


class AsyncClient:
    """The asynchronous twin of Client."""

    def __init__(self, *, base_url: str | None = None, api_key: str | None = None, timeout: float = 300.0,
                 max_retries: int = 2, http_client: httpx.AsyncClient | None = None) -> None:
        self.base_url = _base_url(base_url)
        self.max_retries = max_retries
        self._http = http_client or httpx.AsyncClient(base_url=self.base_url, timeout=timeout,
                                                      headers=_auth_headers(api_key))
        self.models = _AsyncModels(self)
        self.training = _AsyncTraining(self)
        self.embeddings = _AsyncEmbeddings(self)
        self.collections = _AsyncCollections(self)
        self.images = _AsyncImages(self)
        self.audio = _Audio(self)
        self.datasets = _AsyncDatasets(self)
        self.keys = _AsyncKeys(self)

    async def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        for attempt in range(self.max_retries + 1):
            response, error = None, None
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as e:
                error = e
            if attempt < self.max_retries and _retryable(response, error):
                await asyncio.sleep(_retry_delay(response, attempt))
                continue
            if error is not None:
                raise APIConnectionError(f"cannot reach {self.base_url}: {error}") from error
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
