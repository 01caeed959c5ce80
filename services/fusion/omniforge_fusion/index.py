"""The search index: ChromaDB collections of unit vectors in the shared space, cosine distance.

Embedded (`PersistentClient` under $OMNIFORGE_HOME/chroma) by default; a Chroma server
(`HttpClient`) when OMNIFORGE_CHROMA_URL is set. Telemetry is off either way. Each collection
records the embedding model its vectors came from, so a query never compares vectors of two
different models: after a new model version, re-index (`omniforge index starter`).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

NAME_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,62}[A-Za-z0-9]$")
STARTER_COLLECTION = "starter"
MAX_K = 100
MAX_METADATA_KEYS = 32


class InvalidIndexRequest(ValueError):
    """A bad collection name, item or query; the message says what to send instead."""


class NotFound(LookupError):
    pass


class StaleCollection(RuntimeError):
    """The collection holds vectors of another embedding model."""


@dataclass
class Hit:
    id: str
    caption: str
    score: float
    metadata: dict


def check_name(name: str) -> str:
    if not NAME_RULE.match(name or ""):
        raise InvalidIndexRequest(f"collection name {name!r} is not valid; use 3-64 characters from "
                          "letters, digits, '.', '_' and '-', starting and ending with a letter or digit")
    return name


def parse_metadata(raw: str, index: int = 0) -> dict:
    """A JSON object of scalars (Chroma stores nothing else); '' = no metadata."""
    if not raw:
        return {}
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise InvalidIndexRequest(f"item {index}: metadata is not JSON ({e.msg}); send a JSON object") from None
    if not isinstance(meta, dict):
        raise InvalidIndexRequest(f"item {index}: metadata must be a JSON object, got {type(meta).__name__}")
    if len(meta) > MAX_METADATA_KEYS:
        raise InvalidIndexRequest(f"item {index}: metadata has {len(meta)} keys; the limit is {MAX_METADATA_KEYS}")
    for k, v in meta.items():
        if not isinstance(v, (str, int, float, bool)) or k.startswith("_omniforge"):
            raise InvalidIndexRequest(f"item {index}: metadata {k!r} must be a string, number or boolean "
                              "(and keys may not start with '_omniforge')")
    return meta


class SearchIndex:
    def __init__(self, *, path: Path | None = None, url: str | None = None) -> None:
        import chromadb
        from chromadb.config import Settings

        settings = Settings(anonymized_telemetry=False, allow_reset=False)
        if url:
            u = urlparse(url if "//" in url else f"http://{url}")
            self.client = chromadb.HttpClient(host=u.hostname or "127.0.0.1", port=u.port or 8000,
                                              ssl=u.scheme == "https", settings=settings)
            self.where = url
        else:
            path = Path(path)
            path.mkdir(parents=True, exist_ok=True)
            self.client = chromadb.PersistentClient(path=str(path), settings=settings)
            self.where = str(path)

    def _collection(self, name: str, *, model: tuple[str, str] | None = None, create: bool = False):
        check_name(name)
        if create:
            col = self.client.get_or_create_collection(
                name, embedding_function=None,
                metadata={"hnsw:space": "cosine", "model": model[0], "model_version": model[1]})
        else:
            try:
                col = self.client.get_collection(name, embedding_function=None)
            except Exception:  # chromadb raises NotFoundError or ValueError by version
                known = ", ".join(sorted(c.name for c in self.client.list_collections())) or "none"
                raise NotFound(f"collection {name!r} does not exist; collections: {known}") from None
        if model is not None:
            have = (col.metadata or {}).get("model"), (col.metadata or {}).get("model_version")
            if have != tuple(model):
                raise StaleCollection(f"collection {name!r} holds vectors of {have[0]}:{have[1]}, not of "
                                      f"{model[0]}:{model[1]}; re-index it (delete its items and add them again)")
        return col

    def add(self, name: str, *, ids: list[str], embeddings: np.ndarray, captions: list[str],
            metadatas: list[dict], model: tuple[str, str]) -> int:
        if len(set(ids)) != len(ids) or any(not i for i in ids):
            raise InvalidIndexRequest("item ids must be non-empty and unique within a request")
        col = self._collection(name, model=model, create=True)
        # Chroma refuses empty metadata dicts: every item carries at least its caption's length
        metas = [{**m, "_omniforge_caption_chars": len(c)} for m, c in zip(metadatas, captions)]
        for start in range(0, len(ids), 1000):
            sl = slice(start, start + 1000)
            col.upsert(ids=ids[sl], embeddings=np.asarray(embeddings[sl], np.float32), documents=captions[sl],
                       metadatas=metas[sl])
        return col.count()

    def delete(self, name: str, ids: list[str]) -> tuple[int, int]:
        col = self._collection(name)
        present = col.get(ids=ids, include=[])["ids"]
        if present:
            col.delete(ids=present)
        return len(present), col.count()

    def drop(self, name: str) -> None:
        self._collection(name)
        self.client.delete_collection(name)

    def search(self, name: str, query: np.ndarray, *, k: int, model: tuple[str, str]) -> list[Hit]:
        if not 1 <= k <= MAX_K:
            raise InvalidIndexRequest(f"k={k} is out of range; send 1 to {MAX_K}")
        col = self._collection(name, model=model)
        n = col.count()
        if n == 0:
            return []
        res = col.query(query_embeddings=np.asarray(query, np.float32)[None], n_results=min(k, n),
                        include=["documents", "metadatas", "distances"])
        return [Hit(id=i, caption=doc or "", score=float(1.0 - dist),
                    metadata={k_: v for k_, v in (meta or {}).items() if not k_.startswith("_omniforge")})
                for i, doc, meta, dist in zip(res["ids"][0], res["documents"][0], res["metadatas"][0],
                                              res["distances"][0])]

    def collections(self) -> list[tuple[str, int, str, str]]:
        out = []
        for c in sorted(self.client.list_collections(), key=lambda c: c.name):
            col = self.client.get_collection(c.name, embedding_function=None)
            meta = col.metadata or {}
            out.append((c.name, col.count(), meta.get("model", ""), meta.get("model_version", "")))
        return out
