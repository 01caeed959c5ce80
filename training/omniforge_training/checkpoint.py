"""Atomic checkpoint and weight files: write to a temporary file, then rename over the target."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

TIED = ("lm_head.weight",)  # shares storage with transformer.wte.weight


def _tied(key: str) -> bool:
    """A GPT's output projection, also inside a larger model (the captioner's `decoder.`)."""
    return any(key == t or key.endswith("." + t) for t in TIED)


def atomic_write(path: Path, write) -> None:
    """Calls write(tmp_path) and renames tmp_path to `path`; a crash leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def save_weights(path: Path, model: torch.nn.Module, *, dtype: torch.dtype = torch.float32,
                 metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()
               if not _tied(k)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_weights(path: Path, model: torch.nn.Module) -> None:
    tensors = {k: v.float() for k, v in load_file(str(path)).items()}
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not _tied(k)]
    if missing or unexpected:
        raise ValueError(f"weights in {path} do not fit the model: missing {missing}, unexpected {unexpected}")
