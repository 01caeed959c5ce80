"""Speech datasets: (text, audio, speaker) triples on disk, and the readers of the layouts people
have.

A speech dataset folder:
  dataset.json    the data card: name, format "speech", sample rate, counts (utterances, speakers,
                  hours), splits, sources and licenses, skipped inputs, content hash
  items.jsonl     one utterance per line: id, text, speaker, seconds, split, audio (relative path)
  audio/          one 16-bit mono FLAC per utterance, at the dataset's sample rate

Readers (each yields (key, audio bytes, text, speaker)):
  librispeech   <speaker>/<chapter>/<speaker>-<chapter>.trans.txt + .flac beside it
  ljspeech      metadata.csv (id|text|normalised text) + wavs/<id>.wav
  commonvoice   a Common Voice release: <split>.tsv (client_id, path, sentence) + clips/ (MP3:
                decoded through ffmpeg)
  hf            a Hugging Face audio dataset saved with `save_to_disk` (Arrow files with an
                audio {bytes, path} column), read with pyarrow, no `datasets` needed
  webdataset    .tar shards of .flac/.wav/.mp3/.ogg + .txt/.json, streamed with `webdataset`

Every clip goes through `omniforge_shared.audio` (decode, mono, soxr resampling; limits); a clip
that cannot be read is skipped and listed in the data card, never stopping the build. Splits go
by a hash of the normalised text, so a sentence of the test split is never heard in training
in any voice; `heldout_speakers` keeps whole voices out of training as well.
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from omniforge_shared.audio import AudioError, AudioLimits, decode_audio, resample, to_mono
from omniforge_shared.bundle import sha256_file

from .ingest import DataError

AUDIO_EXTS = (".flac", ".wav", ".mp3", ".ogg", ".opus", ".m4a", ".webm")
TEXT_FIELDS = ("text", "sentence", "transcription", "transcript", "normalized_text", "caption")
SPEAKER_FIELDS = ("speaker_id", "speaker", "client_id", "voice")
SUPPORTED = ("a LibriSpeech folder (*.trans.txt), an LJSpeech folder (metadata.csv + wavs/), a Common Voice folder "
             "(*.tsv + clips/), a Hugging Face audio dataset saved to disk (*.arrow), or WebDataset .tar shards")


def text_split(text: str, *, seed: int, val: float = 0.05, test: float = 0.05) -> str:
    key = re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()
    u = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2**64
    return "test" if u < test else "val" if u < test + val else "train"


# ---- readers ----------------------------------------------------------------------------------

def detect_speech_format(source: str) -> str:
    if "{" in source and ".tar" in source:
        return "webdataset"
    path = Path(source)
    if not path.exists():
        raise DataError(f"{source} does not exist; give {SUPPORTED}")
    if path.is_file():
        if path.suffix == ".tar":
            return "webdataset"
        raise DataError(f"{path.name}: unknown format; give {SUPPORTED}")
    if (path / "metadata.csv").exists() and (path / "wavs").is_dir():
        return "ljspeech"
    if (path / "clips").is_dir() and list(path.glob("*.tsv")):
        return "commonvoice"
    if list(path.glob("*.arrow")) or list(path.glob("*/*.arrow")):
        return "hf"
    if list(path.glob("*.tar")):
        return "webdataset"
    if next(path.rglob("*.trans.txt"), None) is not None:
        return "librispeech"
    raise DataError(f"{path} holds none of the layouts we read; give {SUPPORTED}")


def read_librispeech(path: Path) -> Iterator[tuple[str, bytes | None, str, str]]:
    for trans in sorted(Path(path).rglob("*.trans.txt")):
        for line in trans.read_text(encoding="utf-8").splitlines():
            uid, _, text = line.strip().partition(" ")
            if not uid:
                continue
            audio = trans.parent / f"{uid}.flac"
            yield uid, audio.read_bytes() if audio.exists() else None, text, uid.split("-")[0]


def read_ljspeech(path: Path) -> Iterator[tuple[str, bytes | None, str, str]]:
    with open(Path(path) / "metadata.csv", encoding="utf-8", newline="") as f:
        for row in csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE):
            if len(row) < 2:
                continue
            text = row[2] if len(row) > 2 and row[2].strip() else row[1]
            audio = Path(path) / "wavs" / f"{row[0]}.wav"
            yield row[0], audio.read_bytes() if audio.exists() else None, text, "ljspeech"


def read_commonvoice(path: Path) -> Iterator[tuple[str, bytes | None, str, str]]:
    seen = set()
    for tsv in sorted(Path(path).glob("*.tsv")):
        with open(tsv, encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                clip = row.get("path")
                if not clip or "sentence" not in row or clip in seen:
                    continue
                seen.add(clip)
                audio = Path(path) / "clips" / clip
                yield Path(clip).stem, audio.read_bytes() if audio.exists() else None, row["sentence"], \
                    row.get("client_id", "unknown")[:16]


def _field(row: dict, names) -> object:
    return next((row[n] for n in names if row.get(n) not in (None, "")), None)


def read_hf(path: Path) -> Iterator[tuple[str, bytes | None, str, str]]:
    import pyarrow as pa

    files = sorted(Path(path).glob("*.arrow")) or sorted(Path(path).glob("*/*.arrow"))
    n = 0
    for arrow in files:
        with pa.memory_map(str(arrow)) as source:
            try:
                table = pa.ipc.open_stream(source).read_all()
            except pa.ArrowInvalid:
                table = pa.ipc.open_file(source).read_all()
        audio_col = next((c for c in ("audio", "speech", "file") if c in table.column_names), None)
        if audio_col is None:
            raise DataError(f"{arrow.name} has no audio column (columns: {table.column_names}); "
                            "save the dataset with an Audio feature named 'audio'")
        for row in table.to_pylist():
            a = row[audio_col]
            data = a.get("bytes") if isinstance(a, dict) else a if isinstance(a, bytes) else None
            if data is None and isinstance(a, dict) and a.get("path") and Path(a["path"]).exists():
                data = Path(a["path"]).read_bytes()
            text = _field(row, TEXT_FIELDS)
            key = str(row.get("id") or (Path(a["path"]).stem if isinstance(a, dict) and a.get("path") else n))
            n += 1
            yield key, data, str(text or ""), str(_field(row, SPEAKER_FIELDS) or "unknown")


def read_webdataset(source: str) -> Iterator[tuple[str, bytes | None, str, str]]:
    import webdataset as wds

    path = Path(source)
    urls = [str(p) for p in sorted(path.glob("*.tar"))] if path.is_dir() else source
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        ext = next((e for e in AUDIO_EXTS if e[1:] in sample), None)
        data = sample[ext[1:]] if ext else None
        text, speaker = "", "unknown"
        if "txt" in sample:
            text = sample["txt"].decode("utf-8", "replace")
        if "json" in sample:
            meta = json.loads(sample["json"])
            text = text or str(_field(meta, TEXT_FIELDS) or "")
            speaker = str(_field(meta, SPEAKER_FIELDS) or speaker)
        yield sample["__key__"], data, text, speaker


READERS = {"librispeech": read_librispeech, "ljspeech": read_ljspeech, "commonvoice": read_commonvoice,
           "hf": read_hf, "webdataset": read_webdataset}


# ---- writing and loading ----------------------------------------------------------------------


def content_hash(path: Path, items: list[dict]) -> str:
    h = hashlib.sha256(sha256_file(Path(path) / "items.jsonl").encode())
    for it in items:
        h.update(sha256_file(Path(path) / it["audio"]).encode())
    return h.hexdigest()


class SpeechWriter:
    """Writes utterances into a speech dataset folder, then its data card."""

    def __init__(self, out: Path, *, sample_rate: int) -> None:
        import soundfile  # noqa: F401  (fail here, not after an hour of synthesis)

        self.out, self.rate = Path(out), sample_rate
        (self.out / "audio").mkdir(parents=True, exist_ok=True)
        self.items: list[dict] = []
        self.ids: set[str] = set()

    def add(self, uid: str, samples: np.ndarray, text: str, speaker: str, split: str, **extra) -> dict:
        import soundfile as sf

        uid = re.sub(r"[^A-Za-z0-9_.-]", "_", uid)
        if uid in self.ids:
            uid = f"{uid}-{len(self.items)}"
        self.ids.add(uid)
        rel = f"audio/{uid}.flac"
        pcm = np.clip(samples, -1, 1)
        sf.write(self.out / rel, pcm, self.rate, format="FLAC", subtype="PCM_16")
        item = {"id": uid, "text": text, "speaker": speaker, "seconds": round(len(pcm) / self.rate, 3),
                "split": split, "audio": rel, **extra}
        self.items.append(item)
        return item

    def finish(self, manifest: dict) -> dict:
        with open(self.out / "items.jsonl", "w", encoding="utf-8") as f:
            for it in self.items:
                f.write(json.dumps(it, ensure_ascii=False) + "\n")
        speakers = sorted({it["speaker"] for it in self.items})
        splits = {s: sum(it["split"] == s for it in self.items) for s in ("train", "val", "test")}
        card = {"format": "speech", "sample_rate": self.rate, "audio": "FLAC, 16-bit, mono",
                "counts": {"utterances": len(self.items), "speakers": len(speakers),
                           "hours": round(sum(it["seconds"] for it in self.items) / 3600, 3), **manifest.pop("counts", {})},
                "splits": splits, "speakers": speakers[:200], **manifest,
                "content_hash": content_hash(self.out, self.items)}
        (self.out / "dataset.json").write_text(json.dumps(card, indent=2, ensure_ascii=False))
        return card


def build_speech_dataset(source: str, out: Path, *, name: str, sample_rate: int = 16_000, seed: int = 1337,
                         heldout_speakers: tuple[str, ...] = (), limit: int | None = None,
                         limits: AudioLimits = AudioLimits(max_seconds=60.0), log=print, progress: bool = True) -> dict:
    """Any supported layout -> a speech dataset folder at `sample_rate`."""
    t0 = time.time()
    fmt = detect_speech_format(str(source))
    rows = READERS[fmt](source if fmt == "webdataset" else Path(source))
    if progress:
        from tqdm import tqdm
        rows = tqdm(rows, desc=f"ingest {fmt}", unit="clip")
    writer, skipped = SpeechWriter(out, sample_rate=sample_rate), []
    for key, data, text, speaker in rows:
        if limit and len(writer.items) >= limit:
            break
        text = " ".join(str(text).split())
        if not text:
            skipped.append({"key": key, "reason": "no transcript"})
            continue
        if data is None:
            skipped.append({"key": key, "reason": "audio file missing"})
            continue
        try:
            samples, rate = decode_audio(data, limits)
        except AudioError as e:
            skipped.append({"key": key, "reason": str(e)})
            continue
        split = "test" if speaker in heldout_speakers else text_split(text, seed=seed)
        writer.add(key, resample(to_mono(samples), rate, sample_rate), text, speaker, split)
    if not writer.items:
        reasons = sorted({s["reason"] for s in skipped})[:3]
        raise DataError(f"no usable utterances in {source} ({len(skipped)} skipped: {reasons})")
    provenance = {"path": Path(str(source)).name, "format": fmt}
    card = writer.finish({
        "name": name, "split": {"method": "sha256(seed:normalised text)", "val": 0.05, "test": 0.05, "seed": seed,
                                "heldout_speakers": list(heldout_speakers)},
        "sources": [provenance], "licenses": {"source": {"license": "as given by the source"}},
        "counts": {"skipped": len(skipped)}, "skipped": skipped[:100], "build_seconds": round(time.time() - t0, 1)})
    log(f"dataset {name}: {card['counts']['utterances']} utterances, {card['counts']['hours']} h, "
        f"{card['counts']['speakers']} speakers ({len(skipped)} skipped) from {fmt}")
    return card


@dataclass
class SpeechDataset:
    path: Path
    manifest: dict
    items: list[dict]

    @property
    def sample_rate(self) -> int:
        return int(self.manifest["sample_rate"])

    def split(self, name: str, *, speakers: list[str] | None = None, exclude_speakers: list[str] = ()) -> list[dict]:
        return [it for it in self.items if it["split"] == name and (speakers is None or it["speaker"] in speakers)
                and it["speaker"] not in exclude_speakers]

    def audio(self, item: dict) -> np.ndarray:
        import soundfile as sf

        x, rate = sf.read(self.path / item["audio"], dtype="float32")
        if rate != self.sample_rate:
            raise DataError(f"{item['audio']} is at {rate} Hz, the dataset says {self.sample_rate}")
        return x


def is_speech(path: Path) -> bool:
    try:
        return json.loads((Path(path) / "dataset.json").read_text()).get("format") == "speech"
    except (OSError, ValueError):
        return False


def load_speech(path: Path) -> SpeechDataset:
    path = Path(path)
    if not is_speech(path):
        raise DataError(f"{path} is not a speech dataset (no dataset.json with format 'speech'); "
                        "build one with `omniforge data speech`")
    manifest = json.loads((path / "dataset.json").read_text())
    items = [json.loads(line) for line in (path / "items.jsonl").read_text(encoding="utf-8").splitlines() if line]
    return SpeechDataset(path=path, manifest=manifest, items=items)
