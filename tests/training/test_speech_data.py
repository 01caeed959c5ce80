"""Speech corpora in the layouts people have become one speech dataset format: resampled mono
FLAC, transcripts, speakers, splits by sentence, and a data card that lists what was skipped."""
import csv
import io
import json
import tarfile

import numpy as np
import pytest
import soundfile as sf

from omniforge_training.data.ingest import DataError
from omniforge_training.data.speech import build_speech_dataset, detect_speech_format, load_speech

SENTENCES = ["the cat sat on the mat", "a quick brown fox", "it is nine o'clock", "please open the door",
             "how many apples are there", "turn the lights off"]


def clip(i, rate=22_050, seconds=0.5):
    t = np.arange(int(rate * seconds)) / rate
    return (0.2 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype(np.float32)


def wav_bytes(x, rate, fmt="WAV"):
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt)
    return buf.getvalue()


def check(card, out, n, rate=16_000):
    ds = load_speech(out)
    assert card["format"] == "speech" and ds.sample_rate == rate and card["counts"]["utterances"] == n
    assert len(card["content_hash"]) == 64 and sum(card["splits"].values()) == n
    item = ds.items[0]
    x = ds.audio(item)
    assert x.ndim == 1 and abs(len(x) / rate - item["seconds"]) < 0.01
    return ds


def test_librispeech(tmp_path):
    root = tmp_path / "LibriSpeech" / "dev-clean" / "84" / "121123"
    root.mkdir(parents=True)
    lines = []
    for i, s in enumerate(SENTENCES[:4]):
        uid = f"84-121123-{i:04d}"
        (root / f"{uid}.flac").write_bytes(wav_bytes(clip(i, 16_000), 16_000, "FLAC"))
        lines.append(f"{uid} {s.upper()}")
    lines.append("84-121123-0099 THIS ONE HAS NO AUDIO")
    (root / "84-121123.trans.txt").write_text("\n".join(lines) + "\n")
    assert detect_speech_format(str(tmp_path / "LibriSpeech")) == "librispeech"
    card = build_speech_dataset(str(tmp_path / "LibriSpeech"), tmp_path / "out", name="ls", progress=False, log=print)
    ds = check(card, tmp_path / "out", 4)
    assert ds.items[0]["speaker"] == "84" and ds.items[0]["text"] == SENTENCES[0].upper()
    assert card["skipped"] == [{"key": "84-121123-0099", "reason": "audio file missing"}]


def test_ljspeech_resamples_and_prefers_the_normalised_text(tmp_path):
    (tmp_path / "wavs").mkdir()
    rows = []
    for i, s in enumerate(SENTENCES[:3]):
        (tmp_path / "wavs" / f"LJ001-{i:04d}.wav").write_bytes(wav_bytes(clip(i), 22_050))
        rows.append([f"LJ001-{i:04d}", s.replace("nine", "9"), s])
    (tmp_path / "wavs" / "LJ001-0002.wav").write_bytes(b"not a wav at all")
    with open(tmp_path / "metadata.csv", "w", newline="") as f:
        csv.writer(f, delimiter="|").writerows(rows)
    card = build_speech_dataset(str(tmp_path), tmp_path / "out", name="lj", progress=False, log=print)
    ds = check(card, tmp_path / "out", 2)
    assert ds.items[0]["seconds"] == pytest.approx(0.5, abs=0.01)
    assert [s["key"] for s in card["skipped"]] == ["LJ001-0002"]


def test_commonvoice_tsv(tmp_path):
    (tmp_path / "clips").mkdir()
    with open(tmp_path / "validated.tsv", "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["client_id", "path", "sentence", "up_votes"])
        for i, s in enumerate(SENTENCES[:3]):
            name = f"common_voice_en_{i}.wav"          # real releases hold MP3, read through ffmpeg
            (tmp_path / "clips" / name).write_bytes(wav_bytes(clip(i, 48_000), 48_000))
            w.writerow([f"speaker{i % 2}", name, s, 2])
    card = build_speech_dataset(str(tmp_path), tmp_path / "out", name="cv", progress=False, log=print)
    ds = check(card, tmp_path / "out", 3)
    assert {it["speaker"] for it in ds.items} == {"speaker0", "speaker1"}


def test_huggingface_saved_to_disk(tmp_path):
    import pyarrow as pa

    audio = pa.array([{"bytes": wav_bytes(clip(i), 22_050), "path": f"utt{i}.wav"} for i in range(3)],
                     type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    table = pa.table({"audio": audio, "text": SENTENCES[:3], "speaker_id": ["a", "b", "a"]})
    with pa.OSFile(str(tmp_path / "data-00000-of-00001.arrow"), "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    (tmp_path / "dataset_info.json").write_text("{}")
    assert detect_speech_format(str(tmp_path)) == "hf"
    card = build_speech_dataset(str(tmp_path), tmp_path / "out", name="hf", progress=False, log=print)
    ds = check(card, tmp_path / "out", 3)
    assert [it["id"] for it in ds.items] == ["utt0", "utt1", "utt2"]


def test_webdataset_shards_and_heldout_speaker(tmp_path):
    with tarfile.open(tmp_path / "shard-000.tar", "w") as tar:
        for i, s in enumerate(SENTENCES):
            for ext, data in ((".flac", wav_bytes(clip(i), 22_050, "FLAC")),
                              (".json", json.dumps({"text": s, "speaker": f"v{i % 3}"}).encode())):
                info = tarfile.TarInfo(f"{i:06d}{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    card = build_speech_dataset(str(tmp_path), tmp_path / "out", name="wds", heldout_speakers=("v2",),
                                sample_rate=22_050, progress=False, log=print)
    ds = check(card, tmp_path / "out", 6, rate=22_050)
    assert all(it["split"] == "test" for it in ds.items if it["speaker"] == "v2")
    assert ds.split("train", exclude_speakers=["v2"]) == [it for it in ds.items if it["split"] == "train"]


def test_the_same_sentence_lands_in_one_split_in_every_voice():
    from omniforge_training.data.speech import text_split

    splits = {text_split(s, seed=7) for s in ("Turn the lights off.", "turn the lights off", "TURN THE LIGHTS OFF!")}
    assert len(splits) == 1


def test_unknown_layouts_say_what_is_read(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="LibriSpeech folder"):
        detect_speech_format(str(tmp_path))
    with pytest.raises(DataError, match="not a speech dataset"):
        load_speech(tmp_path)


def test_the_cli_builds_and_registers_a_speech_dataset(tmp_path):
    import os
    import subprocess
    import sys

    (tmp_path / "lj" / "wavs").mkdir(parents=True)
    for i, s in enumerate(SENTENCES[:2]):
        (tmp_path / "lj" / "wavs" / f"LJ-{i}.wav").write_bytes(wav_bytes(clip(i), 22_050))
    (tmp_path / "lj" / "metadata.csv").write_text("".join(f"LJ-{i}|{s}|{s}\n" for i, s in enumerate(SENTENCES[:2])))
    env = {**os.environ, "OMNIFORGE_HOME": str(tmp_path / "home")}
    run = subprocess.run([sys.executable, "-m", "omniforge_cli.main", "data", "speech", str(tmp_path / "lj"), "--name",
                          "lj", "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "registered dataset lj:1" in run.stdout and '"utterances": 2' in run.stdout
    bad = subprocess.run([sys.executable, "-m", "omniforge_cli.main", "data", "speech", str(tmp_path / "nowhere"),
                          "--name", "x", "--out", str(tmp_path / "x")], capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and "does not exist" in " ".join((bad.stderr + bad.stdout).split())


def test_the_starter_speech_corpus_is_synthesised_with_a_held_out_voice(tmp_path):
    """A few sentences through every engine: Piper with its alignments, flite, espeak-ng."""
    import soundfile as sf

    from omniforge_training.data.starter_speech import build_starter_speech, transcript

    card = build_starter_speech(tmp_path / "ss", n_wiki=4, n_everyday=4, workers=1, progress=False,
                                log=lambda m: None)
    ds = load_speech(tmp_path / "ss")
    assert card["format"] == "speech" and card["sample_rate"] == 22_050 and card["default_voice"] == "joe"
    assert card["split"]["heldout_speakers"] == ["slt"]
    assert {it["split"] for it in ds.items if it["speaker"] == "slt"} <= {"test"}
    train_sentences = {it["sentence"] for it in ds.items if it["split"] == "train"}
    assert not train_sentences & {it["sentence"] for it in ds.items if it["split"] == "test"}
    joe = [it for it in ds.items if it["speaker"] == "joe"]
    assert len(joe) == 8
    for it in joe:
        x, rate = sf.read(tmp_path / "ss" / it["audio"])
        assert sum(it["durations"]) * 256 == len(x) and len(it["durations"]) == len(it["phoneme_ids"])
    assert all(it["transcript"] == transcript(it["text"]) and it["transcript"].replace(" ", "").replace("'", "").isalpha()
               for it in ds.items)
    assert len({it["speaker"] for it in ds.items}) >= 4


def test_festival_speaks_new_training_sentences_only(tmp_path, tiny_speech):
    """ked speaks sentences the starter corpus does not have, every one of them a training
    sentence under the starter's split; each with its own stretch and pitch; the held-out voice is refused."""
    from omniforge_training.data.festival import build_festival_speech
    from omniforge_training.data.speech import text_split
    from omniforge_training.data.starter_speech import transcript

    starter = load_speech(tiny_speech)
    card = build_festival_speech(tmp_path / "fs", starter=tiny_speech, n_wiki=6, n_everyday=3, workers=1,
                                 progress=False, log=lambda m: None)
    ds = load_speech(tmp_path / "fs")
    assert card["counts"]["utterances"] == 9 and card["sample_rate"] == 16_000 and card["speakers"] == ["ked"]
    assert {it["split"] for it in ds.items} == {"train"}
    assert all(text_split(it["text"], seed=starter.manifest["split"]["seed"]) == "train" for it in ds.items)
    assert not {it["text"].lower() for it in ds.items} & {it["text"].lower() for it in starter.items}
    assert all(it["transcript"] == transcript(it["text"]) for it in ds.items)
    assert len({(it["duration_stretch"], it["f0_mean"]) for it in ds.items}) > 5
    for it in ds.items:
        x = ds.audio(it)
        words = len(it["transcript"].split())
        assert 0.15 * words < len(x) / 16_000 < 1.0 * words + 1 and np.abs(x).max() > 0.1
    with pytest.raises(DataError, match="festival voice"):
        build_festival_speech(tmp_path / "x", voices=("slt",), n_wiki=1, n_everyday=0, progress=False)


def test_the_image_captions_are_spoken_with_the_image_sets_split(tmp_path, tiny_images):
    """The audio tower's queries: each concept's caption spoken, its split that of the image set."""
    from omniforge_training.data.starter_speech import build_spoken_captions

    every = json.loads((tiny_images / "concepts.json").read_text())
    concepts = [c for c in every if c["split"] != "test"][:3] + [c for c in every if c["split"] == "test"][:1]
    images = tmp_path / "images"                   # the builder reads only the image set's concepts.json
    images.mkdir()
    (images / "concepts.json").write_text(json.dumps(concepts))
    card = build_spoken_captions(tmp_path / "sc", images, workers=1, progress=False, log=lambda m: None)
    ds = load_speech(tmp_path / "sc")
    assert card["name"] == "starter-spoken-captions" and card["split"]["heldout_speakers"] == ["slt"]
    by_id = {c["id"]: c for c in concepts}
    for it in ds.items:
        c = by_id[it["concept"]]
        assert it["split"] == c["split"] and it["seconds"] > 0.3
        assert it["text"] in (c["heldout_captions"] if c["split"] == "test" else c["captions"])
        assert it["speaker"] != "slt" or c["split"] == "test"
    assert any(it["speaker"] == "slt" for it in ds.items)          # the held-out voice speaks the test concepts
    with pytest.raises(DataError, match="starter-images"):
        build_spoken_captions(tmp_path / "x", tmp_path, progress=False, log=lambda m: None)


def fake_pocketsphinx_sdist(path):
    """A tar.gz laid out like pocketsphinx-5.1.1.tar.gz's test data (tones instead of people)."""
    from omniforge_training.data.real_speech import ROOT

    files = {"librivox/fileids": b"book-0870\nbook-0880\n",
             "librivox/book-0870.txt": b"he was not an ill disposed young man\n",
             "librivox/book-0880.txt": b"he might even have been made amiable himself\n",
             "librivox/book-0870.json": json.dumps({"w": [{"t": "<sil>", "b": 0.0, "d": 0.1}] + [
                 {"t": w, "b": 0.1 + 0.1 * k, "d": 0.08} for k, w in enumerate("he was not(2) an".split())] + [
                 {"t": "[NOISE]", "b": 0.5, "d": 0.1}]}).encode(),
             "librivox/book-0880.json": b'{"w": []}',
             "librivox/book-0870.wav": wav_bytes(clip(0, 16_000, 1.0), 16_000),
             "librivox/book-0880.wav": wav_bytes(clip(1, 16_000, 0.8), 16_000),
             "cards/cards.transcription": b"<s> ten of clubs  </s> (001)\n",
             "cards/001.wav": wav_bytes(clip(2, 16_000, 0.6), 16_000),
             "goforward.raw": (clip(3, 16_000, 0.7) * 32767).astype("<i2").tobytes()}
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{ROOT}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_real_speech_is_laid_out_from_the_pinned_sdist_and_held_out_whole(tmp_path, monkeypatch):
    from omniforge_training.data import real_speech

    sdist = fake_pocketsphinx_sdist(tmp_path / "pocketsphinx-5.1.1.tar.gz")
    with pytest.raises(DataError, match="not the pinned"):          # not the file it claims to be
        real_speech.build_real_speech(tmp_path / "out", sdist=sdist, progress=False, log=print)
    monkeypatch.setattr(real_speech, "SDIST_SHA256", real_speech.sha256_file(sdist))
    card = real_speech.build_real_speech(tmp_path / "out", sdist=sdist, progress=False, log=print)
    ds = check(card, tmp_path / "out", 4)
    assert card["splits"] == {"train": 0, "val": 0, "test": 4}          # for measuring only
    assert {it["speaker"] for it in ds.items} == {"librivox", "cards", "goforward"}
    texts = {it["speaker"] + ":" + it["text"] for it in ds.items}
    assert "cards:ten of clubs" in texts and "goforward:go forward ten meters" in texts
    go = next(it for it in ds.items if it["speaker"] == "goforward")
    assert go["seconds"] == pytest.approx(0.7, abs=0.01)                 # raw 16-bit PCM read at 16 kHz
    assert card["licenses"]["librivox"]["license"] == "public domain" and "never train" in card["use"]
    timed = next(it for it in ds.items if it["id"].endswith("0870"))        # reference word times kept
    assert [w["word"] for w in timed["words"]] == ["he", "was", "not", "an"] and timed["words"][1]["start"] == 0.2


def test_word_times_are_scored_against_reference_times():
    """`eval speech` aligns the reference words to the recognizer's frames and reports how far each
    word's start and end land from the reference."""
    from types import SimpleNamespace

    from omniforge_cli.eval_speech import word_time_errors

    chars = " '" + "abcdefghijklmnopqrstuvwxyz"
    T, logits = 40, np.zeros((40, len(chars) + 1))
    logits[:, 0] = 4.0
    for frame, c in zip((5, 6, 7, 20, 21, 22), "thecat"):                # "the" at frames 5-7, "cat" at 20-22
        logits[frame, chars.index(c) + 1] = 12.0
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    engine = SimpleNamespace(chars=chars, frame_seconds=0.04)
    ref = [{"word": "the", "start": 0.2, "end": 0.32}, {"word": "cat", "start": 0.9, "end": 0.92}]
    errs = word_time_errors(engine, logp, ref)
    assert errs[0] == pytest.approx((0.0, 0.0)) and errs[1] == pytest.approx((0.1, 0.0))
    assert word_time_errors(engine, logp[:4], ref) == []                  # cannot fit: the clip is skipped
