"""Speech quality, measured with the served engines (ONNX, as a user gets them; `omniforge eval speech`):

  asr_quality            WER/CER of a recognizer bundle on a speech dataset's test split, per voice
                         (greedy and with the LM)
  tts_intelligibility    our recognizer's WER on speech our voice synthesised for the test sentences,
                         beside its WER on the teacher's own recordings of the same sentences (and,
                         with `breakdown`, on our vocoder's speech of the teacher's log-mels and of
                         the acoustic model's teacher-forced log-mels: where the gap opens)
                         (`tts_intelligibility_per_voice`: every voice, each beside its own teacher)
  warp_study             greedy WER with each spectrum warp and with the warp search, on voices no
                         recognizer training ever heard, speaking validation sentences (for choosing
                         a bundle's `decoding.warps` without touching the test split)
  listen                 sample WAVs and a spectrogram figure (synthesised vs reference) for the model card
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from omniforge_shared.audio import normalise_loudness, resample


def _asr(bundle_dir: Path, threads: int = 2, warps: list[float] | None = None):
    from omniforge_audio.asr import ASREngine
    from omniforge_shared.bundle import load_bundle

    return ASREngine(load_bundle(Path(bundle_dir)), threads=threads, warps=warps)


def _prep(x: np.ndarray, rate: int) -> np.ndarray:
    x = resample(x, rate, 16_000)
    try:
        return normalise_loudness(x, 16_000)
    except ValueError:
        return x


def asr_quality(asr_bundle: Path, dataset_dir: Path, *, threads: int = 2, limit: int | None = None,
                warps: list[float] | None = None, progress: bool = True) -> dict:
    """`warps` overrides the bundle's spectrum warps ([1.0]: the plain reading)."""
    from omniforge_training.data.speech import load_speech
    from omniforge_training.train_asr import error_rates, transcript_of

    ds = load_speech(Path(dataset_dir))
    heldout = set(ds.manifest.get("split", {}).get("heldout_speakers", []))
    engine = _asr(asr_bundle, threads, warps)
    items = ds.split("test")[:limit]
    if progress:
        from tqdm import tqdm
        items = tqdm(items, desc="asr eval", unit="utt")
    rows, timing = [], []
    for it in items:
        logp = engine.logprobs(_prep(ds.audio(it), ds.sample_rate))
        rows.append((it["speaker"], transcript_of(it), engine.decode(logp, greedy_only=True), engine.decode(logp)))
        if it.get("words"):
            timing += word_time_errors(engine, logp, it["words"])
    engine.stop()
    picks = {str(w): n for w, n in sorted(engine.warp_picks.items())}

    def rates(sel, k):
        return error_rates([r[1] for r in sel], [r[k] for r in sel]) if sel else {}

    out = {"warps": list(engine.warps), **({"warp_picks": picks} if picks else {})}
    for label, keep in (("heldout_voice", lambda r: r[0] in heldout), ("training_voices", lambda r: r[0] not in heldout),
                        ("all", lambda r: True)):
        sel = [r for r in rows if keep(r)]
        out[label] = {"greedy": rates(sel, 2), "lm": rates(sel, 3)}
    if timing:
        err = np.array(timing)
        out["word_times"] = {"words": len(err), "start_mae_s": round(float(err[:, 0].mean()), 3),
                             "end_mae_s": round(float(err[:, 1].mean()), 3),
                             "start_within_100ms": round(float((err[:, 0] <= 0.1).mean()), 3)}
    out["per_voice_lm"] = {s: rates([r for r in rows if r[0] == s], 3) for s in sorted({r[0] for r in rows})}
    out["examples"] = [{"voice": r[0], "ref": r[1], "greedy": r[2], "lm": r[3]} for r in rows[:: max(1, len(rows) // 10)]]
    return out


def word_time_errors(engine, logp: np.ndarray, reference: list[dict]) -> list[tuple[float, float]]:
    """|start error|, |end error| in seconds of each word, our forced alignment of the reference
    words to the recognizer's frames (the served word-timestamp path) against the reference times."""
    from omniforge_shared.ctc import word_times

    words = word_times(logp, " ".join(w["word"] for w in reference), engine.chars, frame_seconds=engine.frame_seconds)
    if [w.word for w in words] != [w["word"] for w in reference]:
        return []                                       # the words do not fit the frames: skip the clip
    return [(abs(o.start - r["start"]), abs(o.end - r["end"])) for o, r in zip(words, reference)]


def tune_lm(asr_bundle: Path, dataset_dir: Path, *, split: str = "val", limit: int = 300, threads: int = 2,
            lm_weights=(0.5, 0.8, 1.2, 1.6, 2.0, 2.5), word_scores=(-2.0, -1.0, 0.0, 1.0),
            progress: bool = True) -> dict:
    """The beam search's LM weight and word score with the lowest WER on `split` (never the test
    split): the acoustic model runs once, every setting decodes the same log-probs."""
    from omniforge_shared.ctc import BeamDecoder

    from omniforge_training.data.speech import load_speech
    from omniforge_training.train_asr import error_rates, transcript_of

    if split == "test":
        raise ValueError("tune on the validation split; the test split is for measuring")
    ds = load_speech(Path(dataset_dir))
    engine = _asr(asr_bundle, threads)
    if engine.beam is None:
        raise ValueError(f"{asr_bundle} has no language model to tune")
    items = ds.split(split)[:limit]
    logps = [engine.logprobs(_prep(ds.audio(it), ds.sample_rate)) for it in items]
    refs = [transcript_of(it) for it in items]
    lexicon = engine.bundle.file("lexicon").read_text(encoding="utf-8").split()
    grid = [(w, s) for w in lm_weights for s in word_scores]
    if progress:
        from tqdm import tqdm
        grid = tqdm(grid, desc="tune lm", unit="setting")
    results = []
    for w, sc in grid:
        dec = BeamDecoder(engine.chars, lexicon, engine.bundle.file("language-model"), lm_weight=w, word_score=sc)
        results.append({"lm_weight": w, "word_score": sc, **error_rates(refs, [dec(lp) for lp in logps])})
    engine.stop()
    greedy = error_rates(refs, [engine.decode(lp, greedy_only=True) for lp in logps])
    best = min(results, key=lambda r: r["wer"])
    return {"split": split, "utterances": len(items), "best": best, "greedy": greedy, "grid": results}


# espeak-ng accents and variants that are in no split of the starter corpus (chosen before measuring)
STUDY_VOICES = ("en-gb-x-gbclan+f1", "en-us-nyc+f3", "en-gb-x-gbcwmd+f4", "en-us+m1")
STUDY_GRID = (0.76, 0.82, 0.88, 0.94, 1.0, 1.07, 1.14)


def warp_study(asr_bundle: Path, dataset_dir: Path, *, split: str = "val", limit: int = 170, voices=STUDY_VOICES,
               grid=STUDY_GRID, threads: int = 2, seed: int = 7, progress: bool = True) -> dict:
    """Greedy WER/CER of the recognizer reading unseen voices through each warp of `grid` alone, and
    with the warp search over the bundle's own warps and over the whole grid. The voices speak the
    validation sentences (joe's), at random rates and pitches: the test split is never used."""
    import random
    import subprocess
    import tempfile

    import soundfile as sf

    from omniforge_audio.asr import ASREngine
    from omniforge_shared.bundle import load_bundle
    from omniforge_shared.ctc import greedy
    from omniforge_training.data.speech import load_speech
    from omniforge_training.train_asr import error_rates, transcript_of

    if split == "test":
        raise ValueError("choose warps on the validation (or training) sentences; the test split is for measuring")
    ds = load_speech(Path(dataset_dir))
    items = [it for it in ds.split(split) if it["speaker"] == ds.manifest.get("default_voice", "joe")][:limit]
    if not items:
        raise ValueError(f"{dataset_dir} has no {split} utterances of its default voice to speak")
    bundle = load_bundle(Path(asr_bundle))
    own = [float(w) for w in bundle.manifest["decoding"].get("warps", [1.0])]
    grid = tuple(sorted(set(grid) | set(own)))              # the bundle's own warps are always read
    engine = ASREngine(bundle, threads=threads, warps=list(grid))
    rng = random.Random(seed)
    rows = []
    if progress:
        from tqdm import tqdm
        items = tqdm(items, desc="warp study", unit="utt")
    with tempfile.TemporaryDirectory() as tmp:
        for i, it in enumerate(items):
            voice, wav = voices[i % len(voices)], Path(tmp) / "s.wav"
            cmd = ["espeak-ng", "-v", voice, "-s", str(rng.randint(135, 195)), "-p", str(rng.randint(40, 90)),
                   "-w", str(wav), it.get("spoken") or it["text"]]
            try:
                subprocess.run(cmd, check=True, capture_output=True, timeout=60)
            except FileNotFoundError as e:
                raise ValueError("the warp study speaks with espeak-ng; install it (`make speech-data`)") from e
            x, rate = sf.read(wav, dtype="float32")
            outs = engine.readings(_prep(x, rate))
            rows.append((voice, transcript_of(it), [greedy(lp, engine.chars) for lp in outs],
                         [engine.confidence(lp) for lp in outs]))
    engine.stop()
    refs = [r[1] for r in rows]

    def searched(keep: list[float]) -> dict:
        idx = [grid.index(w) for w in keep]
        return error_rates(refs, [r[2][max(idx, key=lambda k: r[3][k])] for r in rows])

    return {"voices": list(voices), "utterances": len(rows), "split": split,
            "each_warp": {str(w): error_rates(refs, [r[2][k] for r in rows]) for k, w in enumerate(grid)},
            "search": {"bundle_warps": own, "bundle": searched(own), "grid": searched(list(grid))}}


def _voiced_f0(x: np.ndarray, rate: int) -> np.ndarray:
    """F0 (Hz) of the voiced frames: whether a voice is pitched like its teacher."""
    from omniforge_training.data.tts_features import yin_f0

    f = yin_f0(x, rate, 256, n_frames=max(1, len(x) // 256))
    return f[f > 0] if (f > 0).any() else np.zeros(1, np.float32)


def _sentence(item: dict):
    """What two recordings of the same sentence share (the corpus's sentence number, else the text)."""
    return item.get("sentence", item["text"])


def _judged_sentences(ds, teacher: str, sentences: str) -> list[tuple[dict, dict | None]]:
    """(item, the teacher's recording of it or None) for each sentence a voice is judged on.
    "own": the teacher's own test recordings (28-160 sentences a voice in the starter corpus);
    "all": every held-out sentence of the test split (each once), so every voice is judged on the
    same sentences, the teacher speaking those it never recorded as the corpus would have."""
    own = [it for it in ds.split("test") if it["speaker"] == teacher]
    if sentences == "own":
        return [(it, it) for it in own]
    if sentences != "all":
        raise ValueError(f"sentences is 'own' or 'all', not {sentences!r}")
    from omniforge_training.data.starter_speech import VOICES

    if teacher not in VOICES:
        raise ValueError(f"judging on all sentences needs a teacher the starter corpus can synthesise "
                         f"({', '.join(VOICES)}), not {teacher!r}; judge on its own recordings instead")
    held = set(ds.manifest.get("split", {}).get("heldout_speakers", []))
    recorded = {_sentence(it): it for it in own}
    pairs = {}
    for it in ds.split("test"):
        if it["speaker"] not in held and _sentence(it) not in pairs:
            pairs[_sentence(it)] = (it, recorded.get(_sentence(it)))
    return list(pairs.values())


def tts_intelligibility(tts_bundle: Path, asr_bundle: Path, dataset_dir: Path, *, voice: str = "",
                        teacher: str = "", threads: int = 2, limit: int | None = None, progress: bool = True,
                        engines: tuple | None = None, breakdown: Path | None = None, sentences: str = "own",
                        heard: dict | None = None) -> dict:
    """WER of our recognizer on our voice's speech for the teacher's test sentences, and on the
    teacher's own recordings of them (the reference the goal compares with). The teacher of a
    voice is the dataset speaker it was trained on (the same id) unless named.

    `sentences`: "own" judges a voice on its teacher's test recordings; "all" on every held-out
    sentence (the teacher synthesising those it has no recording of, see `_judged_sentences`):
    four to five times the sentences for the starter's non-default voices, so a gap moves less
    with any one sentence. `heard` caches what the recognizer made of the teacher's speech
    across calls (two voice bundles judged on the same sentences read the teacher once).

    `breakdown` (the voice's acoustic model: a `train tts` run or the starter's `acoustic`
    folder) also says where the gap opens: the WER of our vocoder on the teacher's own log-mels
    (copy synthesis) and on the acoustic model's teacher-forced log-mels (the recording's own
    durations, pitch and energy), beside the teacher's and ours."""
    import hashlib

    from omniforge_training.data.speech import load_speech
    from omniforge_training.train_asr import error_rates, transcript_of

    ds = load_speech(Path(dataset_dir))
    tts, asr = engines or (voice_engine(tts_bundle, threads), _asr(asr_bundle, threads))
    voice = voice or tts.default_voice
    teacher = teacher or voice
    pairs = _judged_sentences(ds, teacher, sentences)[:limit]
    if not pairs:
        raise ValueError(f"the test split of {dataset_dir} has no recordings by {teacher!r} to compare with")
    heard = {} if heard is None else heard
    synth = None
    todo = pairs
    if progress:
        from tqdm import tqdm
        todo = tqdm(pairs, desc=f"tts eval {voice}", unit="utt")
    refs, ours, theirs, seconds, f0 = [], [], [], [0.0, 0.0], ([], [])
    for it, recorded in todo:
        wave = np.concatenate([c.pcm for c in tts.synthesize(it["spoken"], voice)])
        seconds[0] += len(wave) / tts.sample_rate
        refs.append(transcript_of(it))
        ours.append(asr.transcribe(_prep(wave, tts.sample_rate)).text)
        f0[0].append(_voiced_f0(wave, tts.sample_rate))
        k = (teacher, _sentence(it))
        if k not in heard:
            if recorded is not None:
                recording = ds.audio(recorded)
            else:
                from omniforge_training.data.starter_speech import Synthesiser, speak_as_corpus

                synth = synth or Synthesiser()
                seed = int(hashlib.sha256(f"{teacher}:{k[1]}".encode()).hexdigest()[:8], 16)
                recording, _ = speak_as_corpus(synth, teacher, it["spoken"], seed)
            heard[k] = (asr.transcribe(_prep(recording, ds.sample_rate)).text,
                        _voiced_f0(recording, ds.sample_rate), len(recording) / ds.sample_rate)
        theirs.append(heard[k][0])
        f0[1].append(heard[k][1])
        seconds[1] += heard[k][2]
    if synth is not None:
        synth.close()
    split = {}
    if breakdown is not None:
        split = _breakdown(tts, asr, ds, [r for _, r in pairs if r is not None], Path(breakdown), threads=threads)
    if engines is None:
        asr.stop()
    o, t = error_rates(refs, ours), error_rates(refs, theirs)
    return {"voice": voice, "teacher": teacher, "sentences": sentences, "ours": o, "teacher_recordings": t, **split,
            "teacher_synthesised": sum(r is None for _, r in pairs),
            "wer_gap_points": round(100 * (o.get("wer", 1) - t.get("wer", 1)), 2), "seconds": round(seconds[0], 1),
            "teacher_seconds": round(seconds[1], 1),
            "median_f0_hz": {"ours": round(float(np.median(np.concatenate(f0[0]))), 1),
                             "teacher": round(float(np.median(np.concatenate(f0[1]))), 1)},
            "examples": [{"ref": r, "ours": a, "teacher": b} for r, a, b in list(zip(refs, ours, theirs))[:8]]}


def _breakdown(tts, asr, ds, items: list[dict], acoustic: Path, *, threads: int = 2) -> dict:
    """The recognizer's WER on our vocoder's speech of the teacher's log-mels (copy synthesis) and
    of the acoustic model's teacher-forced log-mels of the same recordings."""
    import tempfile

    from omniforge_shared.audio import log_mel

    from omniforge_training.data.tts_features import TTS_MEL
    from omniforge_training.train_asr import error_rates, transcript_of
    from omniforge_training.train_vocoder import gta_mels

    def heard(mel: np.ndarray) -> str:
        wave = np.concatenate(list(tts.vocode(mel.astype(np.float32))))
        return asr.transcribe(_prep(wave, tts.sample_rate)).text

    with tempfile.TemporaryDirectory() as tmp:
        forced = gta_mels(acoustic, ds, items, Path(tmp) / "gta.pt", threads=threads, progress=False, log=lambda *_: None)
    refs, copy, tf = [], [], []
    for it, mel in zip(items, forced):
        if mel is None:                    # a voice the acoustic model lacks, or a recording it cannot time
            continue
        x = ds.audio(it)
        refs.append(transcript_of(it))
        copy.append(heard(log_mel(resample(x, ds.sample_rate, TTS_MEL.sample_rate), TTS_MEL)))
        tf.append(heard(mel))
    if not refs:
        raise ValueError(f"{acoustic} times none of the {len(items)} recordings: is it the voice's acoustic model?")
    return {"copy_synthesis": error_rates(refs, copy), "teacher_forced": error_rates(refs, tf)}


def tts_intelligibility_per_voice(tts_bundle: Path, asr_bundle: Path, dataset_dir: Path, *, voices: list[str] | None = None,
                                  threads: int = 2, limit: int | None = None, progress: bool = True,
                                  tts=None, breakdown: Path | None = None, sentences: str = "own",
                                  baseline: Path | None = None, baseline_label: str = "") -> dict:
    """`tts_intelligibility` for every voice of the bundle (or those named), each beside its own
    teacher; the default voice's numbers stay at the top level. `tts`: the bundle's engine, if open;
    `breakdown`: its acoustic model, to say where each gap opens; `baseline`: another voice bundle
    (say, the version before) judged in the same run on the same sentences and teacher readings."""
    tts = tts or voice_engine(tts_bundle, threads)
    asr = _asr(asr_bundle, threads)
    base = voice_engine(baseline, threads) if baseline is not None else None
    voices = voices or [v["id"] for v in tts.voices]
    per, unmeasured, before, heard = {}, {}, {}, {}
    try:
        for v in voices:
            try:
                per[v] = tts_intelligibility(tts_bundle, asr_bundle, dataset_dir, voice=v, limit=limit,
                                             progress=progress, engines=(tts, asr), breakdown=breakdown,
                                             sentences=sentences, heard=heard)
                if base is not None and v in {b["id"] for b in base.voices}:
                    before[v] = tts_intelligibility(baseline, asr_bundle, dataset_dir, voice=v, limit=limit,
                                                    progress=progress, engines=(base, asr), sentences=sentences,
                                                    heard=heard)
            except ValueError as e:            # no recordings of its teacher to compare with
                unmeasured[v] = str(e)
    finally:
        asr.stop()
    if not per:
        raise ValueError("; ".join(unmeasured.values()))
    default = per.get(tts.default_voice) or next(iter(per.values()))
    gaps = {v: r["wer_gap_points"] for v, r in per.items()}
    keep = ("teacher", "ours", "teacher_recordings", "copy_synthesis", "teacher_forced", "wer_gap_points", "seconds",
            "teacher_seconds", "teacher_synthesised", "median_f0_hz")
    out = {**default, "per_voice": {v: {k: r[k] for k in keep if k in r} | {"examples": r["examples"][:2]} for v, r in per.items()},
           "unmeasured": unmeasured, "worst_gap_points": max(gaps.values()),
           "voices_within_3_points": sum(g <= 3 for g in gaps.values()),
           "gap_sum_points": round(sum(gaps.values()), 2)}
    if before:
        was = {v: r["wer_gap_points"] for v, r in before.items()}
        for v, r in before.items():
            out["per_voice"][v]["baseline"] = {"ours": r["ours"], "wer_gap_points": r["wer_gap_points"]}
        out["baseline"] = {"bundle": baseline_label or Path(baseline).name,
                           "voices_within_3_points": sum(g <= 3 for g in was.values()),
                           "gap_sum_points": round(sum(was.values()), 2),
                           "ours_gap_sum_points_on_its_voices": round(sum(gaps[v] for v in was), 2)}
    return out


def voice_engine(tts_bundle: Path, threads: int = 2):
    from omniforge_audio.tts import TTSEngine
    from omniforge_shared.bundle import load_bundle

    return TTSEngine(load_bundle(Path(tts_bundle)), threads=threads)


def listen(tts_bundle: Path, dataset_dir: Path, out: Path, *, n: int = 3, tts=None) -> list[Path]:
    """Writes n sample WAVs of the default voice (16-bit, 22,050 Hz) and spectrograms.png (ours over
    the teacher's recording of the same test sentence); a multi-speaker voice adds one sample per
    other voice (`voice_<id>.wav`) and voices.png, each voice over its own teacher."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import soundfile as sf

    from omniforge_shared.audio import log_mel

    from omniforge_training.data.speech import load_speech
    from omniforge_training.data.tts_features import TTS_MEL

    ds = load_speech(Path(dataset_dir))
    tts = tts or voice_engine(tts_bundle)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    test = ds.split("test")

    def figure(pairs: list[tuple[str, dict, str]], path: Path) -> None:
        wide = 5 if len(pairs) <= 3 else 2.4
        fig, axes = plt.subplots(2, len(pairs), figsize=(wide * len(pairs), 4 if wide < 5 else 5), squeeze=False)
        for k, (voice, it, wave_path) in enumerate(pairs):
            wave, _ = sf.read(wave_path, dtype="float32")
            for row, (x, who) in enumerate(((wave, f"ours ({voice})"), (ds.audio(it), f"teacher ({it['speaker']})"))):
                axes[row, k].imshow(log_mel(x, TTS_MEL).T, origin="lower", aspect="auto", cmap="magma", vmin=-11, vmax=3)
                axes[row, k].set_title(f"{who}: {it['text'][:40 if wide == 5 else 22]}", fontsize=8 if wide == 5 else 6)
                axes[row, k].set_xticks([])
                axes[row, k].set_yticks([])
        fig.tight_layout()
        fig.savefig(path, dpi=80 if wide == 5 else 64)
        plt.close(fig)

    def speak(voice: str, it: dict, path: Path) -> Path:
        sf.write(path, np.concatenate([c.pcm for c in tts.synthesize(it["spoken"], voice)]), tts.sample_rate,
                 subtype="PCM_16")
        return path

    default = tts.default_voice
    items = [it for it in test if it["speaker"] == default][:n]
    written = [speak(default, it, out / f"sample_{k + 1}.wav") for k, it in enumerate(items)]
    figure([(default, it, w) for it, w in zip(items, written)], out / "spectrograms.png")
    lines = [f"sample_{k + 1}.wav ({default}): {it['text']}" for k, it in enumerate(items)]
    others = []
    for v in (v["id"] for v in tts.voices if v["id"] != default):
        mine = sorted((it for it in test if it["speaker"] == v), key=lambda it: it["seconds"])
        if mine:                                   # the shortest of its test sentences keeps the file small
            others.append((v, mine[0], speak(v, mine[0], out / f"voice_{v}.wav")))
            lines.append(f"voice_{v}.wav ({v}): {mine[0]['text']}")
    if others:
        figure(others, out / "voices.png")
    (out / "samples.txt").write_text("\n".join(lines) + "\n")
    return written + [w for _, _, w in others]
