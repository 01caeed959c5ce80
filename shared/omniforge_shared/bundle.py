"""Model bundles: a directory with `manifest.json`, ONNX graphs and tokenizer files.

The manifest lists every file with its sha256; `load_bundle` verifies them all and refuses a
bundle whose files were changed, so a service never serves weights nobody registered.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

MANIFEST = "manifest.json"
REQUIRED_KEYS = ("name", "version", "task", "architecture", "files", "created_at")


class BundleError(ValueError):
    """A bundle is missing, incomplete or tampered with."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def task(self) -> str:
        return self.manifest["task"]

    @property
    def space(self) -> tuple[str, str]:
        """The shared latent space the bundle's vectors live in, as (model name, version): the model
        whose text side an embedding model keeps (`space` in its manifest: trained with the text side
        locked), or that an audio tower joins; else the model itself."""
        s = self.manifest.get("space")
        return (s["name"], str(s["version"])) if s else (self.name, self.version)

    def file(self, role: str) -> Path:
        """Path of the file registered under `role` (e.g. 'model', 'tokenizer')."""
        for fname, entry in self.manifest["files"].items():
            if entry.get("role") == role:
                return self.path / fname
        raise BundleError(f"bundle {self.name}:{self.version} has no {role!r} file")

    def has(self, role: str) -> bool:
        return any(e.get("role") == role for e in self.manifest["files"].values())


def write_bundle(path: Path, *, name: str, version: str, task: str, architecture: dict,
                 files: dict[str, str], **extra) -> Bundle:
    """Writes manifest.json for the files already in `path`. `files` maps file name -> role."""
    path = Path(path)
    entries = {}
    for fname, role in files.items():
        fpath = path / fname
        if not fpath.is_file():
            raise BundleError(f"{fpath} does not exist")
        entries[fname] = {"role": role, "sha256": sha256_file(fpath), "bytes": fpath.stat().st_size}
    manifest = {"name": name, "version": version, "task": task, "architecture": architecture,
                "files": entries, "created_at": datetime.now(timezone.utc).isoformat(), **extra}
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return Bundle(path, manifest)


def rewrite_manifest(path: Path, *, add_files: dict[str, str]) -> Bundle:
    """Adds files (name -> role) written into a bundle after its manifest, hashing them."""
    path = Path(path)
    manifest = json.loads((path / MANIFEST).read_text())
    for fname, role in add_files.items():
        fpath = path / fname
        manifest["files"][fname] = {"role": role, "sha256": sha256_file(fpath), "bytes": fpath.stat().st_size}
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return Bundle(path, manifest)


def load_bundle(path: Path, *, verify: bool = True) -> Bundle:
    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{path} is not a model bundle: {MANIFEST} is missing")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{mpath} is not valid JSON: {e}") from e
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise BundleError(f"{mpath} lacks {missing}")
    if verify:
        for fname, entry in manifest["files"].items():
            fpath = path / fname
            if not fpath.is_file():
                raise BundleError(f"bundle {manifest['name']}:{manifest['version']}: {fname} is missing")
            digest = sha256_file(fpath)
            if digest != entry["sha256"]:
                raise BundleError(
                    f"bundle {manifest['name']}:{manifest['version']}: {fname} has sha256 {digest[:12]}…, "
                    f"the manifest says {entry['sha256'][:12]}…; the file was changed after registration. "
                    "Re-export the bundle or restore the file.")
    return Bundle(path, manifest)


def copy_bundle(src: Path, dst: Path) -> Bundle:
    """Copies a verified bundle; the copy is verified again."""
    bundle = load_bundle(src)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for fname in [*bundle.manifest["files"], MANIFEST]:
        shutil.copy2(bundle.path / fname, dst / fname)
    return load_bundle(dst)
