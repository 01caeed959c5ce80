"""The data root: the one server-side folder whose files a remote user may train on.

A path sent over the API (a training job's dataset) is accepted only when it resolves, with
every symlink followed, to a file or folder inside the root: `../`, absolute paths elsewhere
and links pointing out of the root are refused. Uploads (POST /datasets) land inside it.
"""
from __future__ import annotations

from pathlib import Path


class OutsideDataRoot(ValueError):
    pass


def resolve_in_data_root(path: str | Path, root: Path) -> Path:
    """`path` (relative to the root, or absolute) resolved; raises OutsideDataRoot or
    FileNotFoundError with what to send instead."""
    root = Path(root).expanduser().resolve()
    given = Path(path).expanduser()
    candidate = given if given.is_absolute() else root / given
    try:
        resolved = candidate.resolve(strict=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{str(path)!r} does not exist in the data root {root}") from None
    except (OSError, RuntimeError) as e:   # a symlink loop, a name too long
        raise OutsideDataRoot(f"{str(path)!r} cannot be resolved ({e})") from None
    if not resolved.is_relative_to(root):
        raise OutsideDataRoot(f"{str(path)!r} is outside the data root {root}; upload the file with "
                              "POST /datasets, or put it under the root (OMNIFORGE_DATA_ROOT)")
    return resolved
