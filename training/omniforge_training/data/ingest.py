"""Reads documents from plain text, JSONL, Parquet or a Hugging Face dataset saved to disk."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

SUPPORTED = "a .txt file, a .jsonl file, a .parquet file, or a folder written by datasets.save_to_disk"


class DataError(ValueError):
    """The data given cannot be read; the message says what to give instead."""


def detect_format(path: Path) -> str:
    path = Path(path)
    if not path.exists():
        raise DataError(f"data path {path} does not exist; give {SUPPORTED}")
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            return "hf"
        raise DataError(f"{path} is a folder but not a saved Hugging Face dataset; give {SUPPORTED}")
    suffix = path.suffix.lower()
    if suffix in (".txt", ".text", ".md", ""):
        return "text"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".parquet":
        return "parquet"
    raise DataError(f"{path.name}: unknown format {suffix!r}; give {SUPPORTED}")


def read_documents(path: Path, *, text_field: str = "text") -> Iterator[str]:
    """Yields documents. A text file is split into paragraphs at blank lines."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "text":
        try:
            raw = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path} is not valid UTF-8 ({e}); re-encode it as UTF-8") from e
        yield from (p for p in raw.split("\n\n") if p.strip())
    elif fmt == "jsonl":
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{lineno} is not JSON ({e.msg}); each line must be an object") from e
                if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
                    raise DataError(f"{path}:{lineno} has no string field {text_field!r}")
                yield row[text_field]
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if text_field not in table.column_names:
            raise DataError(f"{path} has no column {text_field!r}; columns: {table.column_names}")
        yield from (t for t in table.column(text_field).to_pylist() if isinstance(t, str))
    else:
        from datasets import load_from_disk

        ds = load_from_disk(str(path))
        if hasattr(ds, "keys"):  # a DatasetDict: read every split
            splits = [ds[k] for k in ds.keys()]
        else:
            splits = [ds]
        for split in splits:
            if text_field not in split.column_names:
                raise DataError(f"{path} has no column {text_field!r}; columns: {split.column_names}")
            yield from (t for t in split[text_field] if isinstance(t, str))
