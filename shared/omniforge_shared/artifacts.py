"""Artifact store: where registered bundles live. A local directory now; the interface is
small enough for an S3-compatible store to implement later."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Protocol


class ArtifactStore(Protocol):
    def put_dir(self, src: Path, key: str) -> str: ...
    def local_path(self, key: str) -> Path: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...


class LocalArtifactStore:
    scheme = "file"

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"artifact key {key!r} escapes the store")
        return path

    def put_dir(self, src: Path, key: str) -> str:
        """Copies src to key atomically (a temporary sibling renamed into place)."""
        dst = self._path(key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}."))
        try:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            if dst.exists():
                shutil.rmtree(dst)
            tmp.rename(dst)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return key

    def local_path(self, key: str) -> Path:
        return self._path(key)

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def delete(self, key: str) -> None:
        shutil.rmtree(self._path(key), ignore_errors=True)
