"""Layer tables of a bundle's weights, read with safetensors' numpy loader (no torch)."""
from __future__ import annotations

import re
from math import prod

from omniforge_shared.bundle import Bundle


def layer_table(bundle: Bundle) -> tuple[list[dict], int]:
    """Rows grouped by layer (e.g. `transformer.h.0.attn`), with tensor shapes and parameter counts."""
    from safetensors import safe_open

    rows: dict[str, dict] = {}
    with safe_open(str(bundle.file("weights")), framework="numpy") as f:
        for key in f.keys():
            shape = tuple(f.get_slice(key).get_shape())
            layer = re.sub(r"\.(weight|bias)$", "", key)
            row = rows.setdefault(layer, {"layer": layer, "tensors": 0, "shapes": [], "params": 0})
            row["tensors"] += 1
            row["shapes"].append("x".join(map(str, shape)))
            row["params"] += prod(shape)
    out = [dict(r, shapes=", ".join(r["shapes"])) for r in rows.values()]
    return out, sum(r["params"] for r in out)
