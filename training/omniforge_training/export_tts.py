"""Exports a text-to-speech voice bundle: the acoustic model in two ONNX halves and the vocoder,
each checked against torch, with the voices, the symbol table and sample WAVs.

  encoder.onnx  ids (1, N) int64, lengths (1,), speaker (1,) -> hidden (1, N, d), log_durations (1, N)
  decoder.onnx  frames (1, T, d) (hidden states repeated by duration), frame_lengths (1,) -> mel (1, T, 80)
  vocoder.onnx  mel (1, T, 80) -> audio (1, (T - 1) * 256)
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from omniforge_shared.bundle import Bundle, write_bundle
from omniforge_shared.phonemes import SYMBOLS

from .checkpoint import load_weights
from .export_onnx import code_version
from .models.fastspeech import FastSpeech, TTSConfig
from .models.vocoder import Vocoder, VocoderConfig

PARITY_TOLERANCE = 2e-3
TASK = "text-to-speech"
SAMPLE_TEXTS = ("The quick brown fox jumps over the lazy dog.",
                "Your meeting with Anna moved to Thursday at 3:30 pm.")


def load_tts(run_dir: Path) -> tuple[FastSpeech, dict]:
    cfg = json.loads((Path(run_dir) / "config.json").read_text())
    model = FastSpeech(TTSConfig.from_dict(cfg["model"]))
    load_weights(Path(run_dir) / "model.safetensors", model)
    return model.eval(), cfg


def load_vocoder(run_dir: Path) -> Vocoder:
    cfg = json.loads((Path(run_dir) / "config.json").read_text())
    model = Vocoder(VocoderConfig.from_dict(cfg["model"]))
    load_weights(Path(run_dir) / "model.safetensors", model)
    return model.eval()


def voice_cards(speakers: list[str], dataset_manifest: dict | None = None) -> list[dict]:
    """What /voices says of each speaker: the dataset card's name and gender, the language of the
    starter voices."""
    from .data.starter_speech import VOICES

    known = (dataset_manifest or {}).get("voices") or {}
    cards = []
    for s in speakers:
        card = {**VOICES.get(s, {}), **known.get(s, {})}
        cards.append({"id": s, "name": card.get("name", s), "language": card.get("language", "en-US"),
                      "gender": card.get("gender", "unknown")})
    return cards


class _Encoder(torch.nn.Module):
    def __init__(self, m: FastSpeech) -> None:
        super().__init__()
        self.m = m

    def forward(self, ids, lengths, speaker):
        hidden, logd, _, _ = self.m.encode(ids, lengths, speaker)
        return hidden, logd


class _Decoder(torch.nn.Module):
    def __init__(self, m: FastSpeech) -> None:
        super().__init__()
        self.m = m

    def forward(self, frames, frame_lengths):
        return self.m.decode(frames, frame_lengths)


def _parity(sess, feeds: dict, ref: list[np.ndarray]) -> float:
    got = sess.run(None, feeds)
    return max(float(np.abs(g - r).max()) for g, r in zip(got, ref))


def export_tts_bundle(tts_dir: Path, vocoder_dir: Path, out: Path, *, name: str, version: str,
                      voices: list[dict] | None = None, log=print, extra: dict | None = None) -> Bundle:
    import onnxruntime as ort

    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tts, tcfg = load_tts(Path(tts_dir))
    voc = load_vocoder(Path(vocoder_dir))
    cfg = tts.config
    ids = torch.randint(3, len(SYMBOLS), (1, 23))
    lengths, speaker = torch.tensor([23]), torch.tensor([0])
    opts = dict(opset_version=18, dynamo=False)
    with torch.no_grad():
        enc = _Encoder(tts).eval()           # export restores the wrapper's mode on the model: keep it eval
        torch.onnx.export(enc, (ids, lengths, speaker), str(out / "encoder.onnx"),
                          input_names=["ids", "lengths", "speaker"], output_names=["hidden", "log_durations"],
                          dynamic_axes={"ids": {1: "symbols"}, "hidden": {1: "symbols"}, "log_durations": {1: "symbols"}},
                          **opts)
        hidden, logd = enc(ids, lengths, speaker)
        frames = hidden.repeat_interleave(3, dim=1)
        flen = torch.tensor([frames.shape[1]])
        dec = _Decoder(tts).eval()
        torch.onnx.export(dec, (frames, flen), str(out / "decoder.onnx"), input_names=["frames", "frame_lengths"],
                          output_names=["mel"], dynamic_axes={"frames": {1: "frames"}, "mel": {1: "frames"}}, **opts)
        mel = dec(frames, flen)
        torch.onnx.export(voc, (mel,), str(out / "vocoder.onnx"), input_names=["mel"], output_names=["audio"],
                          dynamic_axes={"mel": {1: "frames"}, "audio": {1: "samples"}}, **opts)
        audio = voc(mel)
    sess = {k: ort.InferenceSession(str(out / f"{k}.onnx"), providers=["CPUExecutionProvider"])
            for k in ("encoder", "decoder", "vocoder")}
    parity = {
        "encoder": _parity(sess["encoder"], {"ids": ids.numpy(), "lengths": lengths.numpy(), "speaker": speaker.numpy()},
                           [hidden.numpy(), logd.numpy()]),
        "decoder": _parity(sess["decoder"], {"frames": frames.numpy(), "frame_lengths": flen.numpy()}, [mel.numpy()]),
        "vocoder": _parity(sess["vocoder"], {"mel": mel.numpy()}, [audio.numpy()]),
    }
    log("onnx parity: " + ", ".join(f"{k} {v:.1e}" for k, v in parity.items()) + f" (tolerance {PARITY_TOLERANCE:g})")
    if not max(parity.values()) < PARITY_TOLERANCE:
        raise RuntimeError(f"exported voice differs from torch: {parity}")
    speakers = tcfg.get("speakers") or ["default"]
    if not voices:
        # the names and genders on the training dataset's card; a dataset moved, gone or unreadable
        # leaves the starter cards, or the ids
        from .data.speech import is_speech

        data = Path(tcfg.get("train", {}).get("data", ""))
        try:
            dataset = json.loads((data / "dataset.json").read_text()) if is_speech(data) else None
        except (OSError, ValueError):
            dataset = None
        voices = voice_cards(speakers, dataset)
    scales = tcfg.get("duration_scale") or {}
    for v in voices:
        v.setdefault("speaker", speakers.index(v["id"]) if v["id"] in speakers else 0)
        v.setdefault("sample_rate", cfg.sample_rate)
        speaker = speakers[int(v["speaker"])]
        if speaker in scales:                            # speak at the teacher's rate (train_tts.duration_scales)
            v.setdefault("duration_scale", scales[speaker])
    summary = {}
    for d, key in ((tts_dir, "tts"), (vocoder_dir, "vocoder")):
        p = Path(d) / "summary.json"
        summary[key] = json.loads(p.read_text()) if p.exists() else {}
    metrics = {f"parity_{k}": v for k, v in parity.items()}
    for key in ("tts", "vocoder"):
        metrics |= {f"{key}_{k}": v for k, v in summary[key].get("quality", {}).items() if isinstance(v, float)}
    bundle = write_bundle(
        out, name=name, version=version, task=TASK,
        architecture={"family": "fastspeech2+fourier-vocoder", "config": cfg.to_dict(), "vocoder": voc.config.to_dict(),
                      "params": sum(p.numel() for p in tts.parameters()) + sum(p.numel() for p in voc.parameters())},
        files={"encoder.onnx": "encoder", "decoder.onnx": "decoder", "vocoder.onnx": "vocoder"},
        audio={"sample_rate": cfg.sample_rate, "hop": cfg.hop, "n_mels": cfg.n_mels},
        phonemes={"engine": "espeak-ng", "voice": "en-us", "symbols": list(SYMBOLS)},
        voices=voices, default_voice=voices[0]["id"], metrics=metrics,
        training={key: {k: summary[key][k] for k in ("wall_s", "steps") if k in summary[key]} for key in summary},
        data={"dataset": summary["tts"].get("dataset"), "content_hash": summary["tts"].get("dataset_hash")},
        code_version=code_version(), export_seconds=round(time.time() - t0, 1), **(extra or {}))
    log(f"bundle {name}:{version} written to {out}")
    return bundle


def export_vocoder_bundle(run_dir: Path, out: Path, *, name: str, version: str, log=print,
                          extra: dict | None = None) -> Bundle:
    """A vocoder on its own (task `vocoder`): the ONNX graph for tools, the torch weights and config
    for the `tts` recipe, which builds voices on it."""
    import shutil

    import onnxruntime as ort

    t0 = time.time()
    run_dir, out = Path(run_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    voc = load_vocoder(run_dir)
    mel = torch.randn(1, 40, voc.config.n_mels)
    with torch.no_grad():
        torch.onnx.export(voc, (mel,), str(out / "vocoder.onnx"), input_names=["mel"], output_names=["audio"],
                          dynamic_axes={"mel": {1: "frames"}, "audio": {1: "samples"}}, opset_version=18, dynamo=False)
        ref = voc(mel).numpy()
    got = ort.InferenceSession(str(out / "vocoder.onnx"), providers=["CPUExecutionProvider"]).run(None, {"mel": mel.numpy()})[0]
    parity = float(np.abs(got - ref).max())
    if not parity < PARITY_TOLERANCE:
        raise RuntimeError(f"exported vocoder differs from torch by {parity:.2e}")
    shutil.copy(run_dir / "model.safetensors", out / "model.safetensors")
    shutil.copy(run_dir / "config.json", out / "config.json")
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    metrics = {k: v for k, v in summary.get("quality", {}).items() if isinstance(v, float)} | {"onnx_parity": parity}
    bundle = write_bundle(out, name=name, version=version, task="vocoder",
                          architecture={"family": "fourier-vocoder", "config": voc.config.to_dict(),
                                        "params": sum(p.numel() for p in voc.parameters())},
                          files={"vocoder.onnx": "vocoder", "model.safetensors": "weights", "config.json": "config"},
                          metrics=metrics, training={k: summary[k] for k in ("wall_s", "steps") if k in summary},
                          code_version=code_version(), export_seconds=round(time.time() - t0, 1), **(extra or {}))
    log(f"bundle {name}:{version} written to {out}")
    return bundle
