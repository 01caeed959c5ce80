"""Token datasets on disk: `train.bin`/`val.bin` memory-mapped arrays plus `dataset.json`.

`build_dataset` runs the whole text pipeline (ingest, clean, deterministic split, tokenizer,
tokenize) and writes a folder the trainer and the registry both understand.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from omniforge_shared.bundle import sha256_file
from omniforge_shared.tokenizer import Tokenizer, load_tokenizer, train_tokenizer

from .clean import CleanStats, clean_documents
from .ingest import DataError, detect_format, read_documents

MANIFEST = "dataset.json"


def content_hash(path: Path) -> str:
    """The dataset's identity: a hash over its token files and tokenizer."""
    content = hashlib.sha256()
    for fname in ("train.bin", "val.bin", "tokenizer.json"):
        content.update(sha256_file(Path(path) / fname).encode())
    return content.hexdigest()


def is_val(doc: str, val_fraction: float, seed: int) -> bool:
    """Deterministic split: a document's side depends only on its content and the seed."""
    digest = hashlib.sha256(f"{seed}:{doc}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 65535 else np.uint32


def write_tokens(path: Path, ids: list[int], vocab_size: int) -> int:
    arr = np.memmap(path, dtype=token_dtype(vocab_size), mode="w+", shape=(max(len(ids), 1),))
    arr[:len(ids)] = ids
    arr.flush()
    return len(ids)


def encode_documents(tokenizer: Tokenizer, docs: list[str]) -> list[int]:
    """Concatenates documents, separated by EOS (BPE) or a blank line (char)."""
    ids: list[int] = []
    if tokenizer.eos_id is not None:
        encoded = tokenizer.encode_batch(docs) if hasattr(tokenizer, "encode_batch") else map(tokenizer.encode, docs)
        for doc_ids in encoded:
            ids.extend(doc_ids)
            ids.append(tokenizer.eos_id)
    else:
        ids = tokenizer.encode("\n\n".join(docs))
    return ids


def build_dataset(sources: list[Path], out: Path, *, name: str, tokenizer: str = "bpe",
                  vocab_size: int = 4096, val_fraction: float = 0.05, seed: int = 1337,
                  language: str | None = "en", text_field: str = "text",
                  tokenizer_path: Path | None = None, log=print) -> dict:
    if not sources:
        raise DataError("no data sources given")
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # 1. ingest every source and clean them as one stream, so duplicates across sources go too
    provenance = []
    for src in map(Path, sources):
        provenance.append({"path": src.name, "format": detect_format(src),
                           "sha256": sha256_file(src) if src.is_file() else None})

    def all_documents():
        for src, entry in zip(map(Path, sources), provenance):
            n = 0
            for doc in read_documents(src, text_field=text_field):
                n += 1
                yield doc
            entry["documents_read"] = n
            log(f"ingested {src.name}: {n} documents")

    stats = CleanStats()
    docs = clean_documents(all_documents(), language=language, stats=stats)
    if not docs:
        raise DataError("no documents left after cleaning; check the language filter and the inputs")
    # 2. deterministic split by content hash
    train_docs = [d for d in docs if not is_val(d, val_fraction, seed)]
    val_docs = [d for d in docs if is_val(d, val_fraction, seed)]
    if not val_docs or not train_docs:
        raise DataError(f"split left {len(train_docs)} train and {len(val_docs)} val documents; "
                        "give more documents or change val_fraction")
    # 3. tokenizer, trained on the train side only
    if tokenizer_path is not None:
        tok = load_tokenizer(tokenizer_path)
    else:
        tok = train_tokenizer(tokenizer, train_docs, vocab_size=vocab_size)
    tok.save(out / "tokenizer.json")
    # 4. tokenize to memory-mapped arrays
    n_train = write_tokens(out / "train.bin", encode_documents(tok, train_docs), tok.vocab_size)
    n_val = write_tokens(out / "val.bin", encode_documents(tok, val_docs), tok.vocab_size)
    manifest = {
        "name": name,
        "format": "tokens",
        "tokenizer": tok.kind,
        "vocab_size": tok.vocab_size,
        "dtype": np.dtype(token_dtype(tok.vocab_size)).name,
        "counts": {"documents": len(docs), "train_documents": len(train_docs),
                   "val_documents": len(val_docs), "train_tokens": n_train, "val_tokens": n_val,
                   "train_chars": sum(map(len, train_docs)), "val_chars": sum(map(len, val_docs))},
        "cleaning": asdict(stats),
        "split": {"method": "sha256(seed:document)", "val_fraction": val_fraction, "seed": seed},
        "sources": provenance,
        "content_hash": content_hash(out),
        "build_seconds": round(time.time() - t0, 1),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    log(f"dataset {name}: {n_train} train / {n_val} val tokens, {tok.kind} vocab {tok.vocab_size}")
    return manifest


def verify_dataset(path: Path) -> dict:
    """The manifest of a dataset whose files still match its content hash (else DataError)."""
    manifest = load_dataset_manifest(path)
    if content_hash(path) != manifest["content_hash"]:
        raise DataError(f"dataset {path}: its files do not match the content hash in dataset.json "
                        "(corrupt or changed); rebuild it")
    return manifest


def load_dataset_manifest(path: Path) -> dict:
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        raise DataError(f"{path} is not a token dataset (no {MANIFEST}); build one with `omniforge data build`")
    manifest = json.loads(manifest_path.read_text())
    for fname in ("train.bin", "val.bin", "tokenizer.json"):
        if not (path / fname).exists():
            raise DataError(f"dataset {path} is missing {fname}; rebuild it")
    return manifest


def open_tokens(path: Path, dtype: str) -> np.ndarray:
    return np.memmap(path, dtype=np.dtype(dtype), mode="r")
