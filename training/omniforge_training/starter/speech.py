"""The committed speech starters: the recognizer (conformer-CTC) and the voice (acoustic model +
vocoder), trained on the synthesised starter speech corpus, as fp16 safetensors with manifests.

The recognizer's language model is not committed: `omniforge bootstrap` builds it from the
starter text corpus (installed offline) when it exports the bundle, leaving out every sentence
of the speech corpus's validation and test splits (listed in `heldout_transcripts.txt`).
"""
from __future__ import annotations

import json
from pathlib import Path

STARTER_ASR_DIR = Path(__file__).parent / "asr"
STARTER_ASR_NAME = "asr-starter"
STARTER_TTS_DIR = Path(__file__).parent / "tts"
STARTER_TTS_NAME = "tts-starter"
HELDOUT_FILE = "heldout_transcripts.txt"
# where the packager's files lay is no business of a user's copy: name them as the repository does
_WHERE = {"data": "data/starter-speech"}


def _clean(config: dict, out: str) -> dict:
    config = json.loads(json.dumps(config))
    config.setdefault("train", {}).update(_WHERE, out=out)
    return config


def heldout_transcripts(dataset_dir: Path) -> list[str]:
    from ..data.speech import load_speech
    from ..data.starter_speech import transcript

    ds = load_speech(Path(dataset_dir))
    return sorted({it.get("transcript") or transcript(it["text"]) for it in ds.items if it["split"] != "train"})


def listed_heldout(folder: Path) -> set[str]:
    """The held-out sentences a starter folder lists (`heldout_transcripts.txt`)."""
    return set((Path(folder) / HELDOUT_FILE).read_text(encoding="utf-8").splitlines()) - {""}


def lm_heldout(dataset_dir: Path | None, run_dir: Path) -> tuple[set[str], str]:
    """The sentences a recognizer's LM must leave out, and where they came from: the val/test
    transcripts of its speech dataset, else the list a starter folder carries, else none ("")."""
    if dataset_dir and (Path(dataset_dir) / "dataset.json").exists():
        return set(heldout_transcripts(dataset_dir)), str(dataset_dir)
    listed = Path(run_dir) / HELDOUT_FILE
    if listed.exists():
        return listed_heldout(run_dir), str(listed)
    return set(), ""


def package_asr_starter(run_dir: Path, dataset_dir: Path, *, version: str, out: Path = STARTER_ASR_DIR,
                        evaluation: dict | None = None) -> dict:
    """`evaluation`: what `omniforge eval speech` measured on the exported bundle (greedy and LM)."""
    import torch

    from ..checkpoint import save_weights
    from ..data.speech import load_speech
    from ..export_asr import load_asr

    run_dir, out = Path(run_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # trained further from an earlier starter: read its manifest before it is overwritten
    init = json.loads((run_dir / "config.json").read_text())["train"].get("init")
    before = json.loads((Path(init) / "manifest.json").read_text()) if init and (Path(init) / "manifest.json").exists() else None
    save_weights(out / "model.safetensors", load_asr(run_dir), dtype=torch.float16)
    config = _clean(json.loads((run_dir / "config.json").read_text()), "runs/asr")
    (out / "config.json").write_text(json.dumps(config, indent=2))
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["config"].update(_WHERE, out="runs/asr")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / HELDOUT_FILE).write_text("\n".join(heldout_transcripts(dataset_dir)) + "\n", encoding="utf-8")
    m = load_speech(Path(dataset_dir)).manifest
    manifest = {"name": STARTER_ASR_NAME, "version": version, "recipe": "asr", "config": config,
                "data": {"dataset": m["name"], "content_hash": m["content_hash"], "counts": m["counts"],
                         "heldout_speakers": m["split"]["heldout_speakers"],
                         "extra_training_data": summary.get("extra_datasets", [])},
                "quality": {k: v for k, v in summary["quality"].items() if k != "examples"},
                "examples": summary["quality"].get("examples", []), "wall_s": summary["wall_s"],
                "steps": summary["steps"], "train_hours": summary.get("train_hours"), "params": summary["params"],
                "weights_dtype": "float16"}
    if before:                   # the whole lineage, and the steps and time of all of it
        manifest["trained_from"] = {k: before[k] for k in ("version", "steps", "wall_s", "served_quality", "trained_from")
                                    if k in before}
        manifest["total_steps"] = before.get("total_steps", before["steps"]) + summary["steps"]
        manifest["total_wall_s"] = round(before.get("total_wall_s", before["wall_s"]) + summary["wall_s"], 1)
    if evaluation:
        manifest["served_quality"] = {k: v for k, v in evaluation.get("asr", {}).items() if k != "examples"}
        if "tuning" in evaluation:
            manifest["lm_tuning"] = {k: evaluation["tuning"][k] for k in ("split", "utterances", "best", "greedy")}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def package_tts_starter(tts_run: Path, vocoder_run: Path, dataset_dir: Path, *, version: str,
                        out: Path = STARTER_TTS_DIR, evaluation: dict | None = None) -> dict:
    """The acoustic model in `acoustic/`, the vocoder in `vocoder/`, one manifest; `evaluation`:
    the voice's intelligibility as `omniforge eval speech --tts` measured it."""
    import torch

    from ..checkpoint import save_weights
    from ..data.speech import load_speech
    from ..export_tts import load_tts, load_vocoder, voice_cards

    out = Path(out)
    parts, earlier = {}, {}
    for sub, run in (("acoustic", Path(tts_run)), ("vocoder", Path(vocoder_run))):   # read before overwriting
        init = json.loads((run / "config.json").read_text())["train"].get("init")
        if init and (Path(init) / "summary.json").exists():
            before = json.loads((Path(init) / "summary.json").read_text())
            earlier[sub] = {"steps": before.get("total_steps", before["steps"]),
                            "wall_s": before.get("total_wall_s", before["wall_s"])}
    for sub, run, loader in (("acoustic", Path(tts_run), lambda r: load_tts(r)[0]), ("vocoder", Path(vocoder_run), load_vocoder)):
        (out / sub).mkdir(parents=True, exist_ok=True)
        save_weights(out / sub / "model.safetensors", loader(run), dtype=torch.float16)
        config = _clean(json.loads((run / "config.json").read_text()), f"runs/{'tts' if sub == 'acoustic' else 'vocoder'}")
        (out / sub / "config.json").write_text(json.dumps(config, indent=2))
        summary = json.loads((run / "summary.json").read_text())
        summary["config"].update(_WHERE, out=config["train"]["out"])
        if sub in earlier:                     # trained further from the earlier starter's weights
            summary |= {"trained_from": earlier[sub], "total_steps": earlier[sub]["steps"] + summary["steps"],
                        "total_wall_s": round(earlier[sub]["wall_s"] + summary["wall_s"], 1)}
        (out / sub / "summary.json").write_text(json.dumps(summary, indent=2))
        parts[sub] = {"wall_s": summary["wall_s"], "steps": summary["steps"], "params": summary["params"],
                      "quality": summary.get("quality", {})}
        parts[sub] |= {k: summary[k] for k in ("trained_from", "total_steps", "total_wall_s") if k in summary}
    m = load_speech(Path(dataset_dir)).manifest
    voices = voice_cards(json.loads((out / "acoustic" / "config.json").read_text())["speakers"], m)
    manifest = {"name": STARTER_TTS_NAME, "version": version, "recipe": "tts+vocoder", "voices": voices,
                "data": {"dataset": m["name"], "content_hash": m["content_hash"]}, "parts": parts,
                "weights_dtype": "float16"}
    if evaluation and "tts" in evaluation:
        manifest["intelligibility"] = {k: v for k, v in evaluation["tts"].items() if k != "examples"}
        manifest["examples"] = evaluation["tts"].get("examples", [])
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


STARTER_AUDIO_TOWER_DIR = Path(__file__).parent / "audio_tower"
STARTER_AUDIO_TOWER_NAME = "audio-tower-starter"


def package_audio_tower_starter(run_dir: Path, *, version: str, out: Path = STARTER_AUDIO_TOWER_DIR) -> dict:
    """The audio tower in the starter CLIP's space: fp16 weights, its config (which names that
    space), the summary with its retrieval numbers, and a manifest."""
    import torch

    from ..checkpoint import save_weights
    from ..export_audio_tower import load_audio_tower

    run_dir, out = Path(run_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tower, config = load_audio_tower(run_dir)
    save_weights(out / "model.safetensors", tower, dtype=torch.float16)
    where = {"data": ["data/starter-speech", "data/starter-spoken-captions"], "images": "data/starter-images",
             "space": "the registered clip-starter", "asr": "training/omniforge_training/starter/asr",
             "out": "runs/audio-align"}
    config["train"].update(where)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["config"].update(where)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    manifest = {"name": STARTER_AUDIO_TOWER_NAME, "version": version, "recipe": "audio-align",
                "space": config["space"], "config": config, "quality": summary["quality"],
                "wall_s": summary["wall_s"], "steps": summary["steps"], "params": summary["params"],
                "trained_params": summary["trained_params"], "datasets": summary["datasets"],
                "weights_dtype": "float16"}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
