"""The committed speech starters: fp16, within the issue's 60 MB, with how they were made and
what they scored."""
import json

import pytest

from omniforge_training.starter.speech import HELDOUT_FILE, STARTER_ASR_DIR, STARTER_TTS_DIR


def test_speech_starters_record_how_they_were_made():
    if not (STARTER_ASR_DIR / "manifest.json").exists():
        pytest.skip("no committed speech starters")
    files = [p for d in (STARTER_ASR_DIR, STARTER_TTS_DIR) for p in d.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 60 * 2**20
    asr = json.loads((STARTER_ASR_DIR / "manifest.json").read_text())
    assert asr["weights_dtype"] == "float16" and asr["wall_s"] > 0 and asr["data"]["heldout_speakers"] == ["slt"]
    assert 0 <= asr["quality"]["heldout_voice"]["wer"] and len(asr["data"]["content_hash"]) == 64
    held = (STARTER_ASR_DIR / HELDOUT_FILE).read_text().split("\n")
    assert len(held) > 100                         # the LM must leave these sentences out
    tts = json.loads((STARTER_TTS_DIR / "manifest.json").read_text())
    ids = [v["id"] for v in tts["voices"]]
    assert ids[0] == "joe" and "slt" not in ids and tts["weights_dtype"] == "float16"   # slt is the test voice
    measured = tts["intelligibility"].get("per_voice", {"joe": tts["intelligibility"]})
    assert set(measured) == set(ids) and all(m["teacher"] == v for v, m in measured.items())
    assert tts["parts"]["acoustic"]["wall_s"] > 0 and tts["parts"]["vocoder"]["wall_s"] > 0
    assert list((STARTER_TTS_DIR / "samples").glob("*.wav")) and (STARTER_TTS_DIR / "samples" / "spectrograms.png").exists()


def test_the_lm_never_reads_the_held_out_sentences():
    from omniforge_training.export_asr import lm_sentences

    if not (STARTER_ASR_DIR / HELDOUT_FILE).exists():
        pytest.skip("no committed speech starters")
    held = set((STARTER_ASR_DIR / HELDOUT_FILE).read_text().split("\n")) - {""}
    seen = {" ".join(s) for s in lm_sentences(held, everyday=2000)}
    assert not held & seen


def test_an_export_without_the_dataset_still_leaves_the_held_out_sentences_out(tmp_path):
    """Exporting the starter recognizer before (or without) building the speech corpus takes the
    held-out list the starter carries; a run with neither is reported, never silently leaky."""
    from omniforge_training.starter.speech import lm_heldout

    if not (STARTER_ASR_DIR / HELDOUT_FILE).exists():
        pytest.skip("no committed speech starters")
    held, source = lm_heldout(tmp_path / "no-corpus-yet", STARTER_ASR_DIR)
    assert source.endswith(HELDOUT_FILE) and len(held) > 300 and "" not in held
    assert lm_heldout(tmp_path / "no-corpus-yet", tmp_path) == (set(), "")


def test_the_warp_study_reads_unseen_voices_through_each_warp(speech_bundles, tiny_speech):
    from omniforge_cli.eval_speech import STUDY_GRID, warp_study
    from omniforge_training.export_asr import DECODING

    asr, _ = speech_bundles
    corpus_voices = set(json.loads((tiny_speech / "dataset.json").read_text())["voices"])
    study = warp_study(asr, tiny_speech, split="train", limit=3, threads=1, progress=False)
    assert study["utterances"] == 3 and not corpus_voices & set(study["voices"])
    assert list(study["each_warp"]) == [str(w) for w in STUDY_GRID]
    assert study["search"]["bundle_warps"] == DECODING["warps"]
    for result in (study["search"]["bundle"], *study["each_warp"].values()):
        assert 0 <= result["cer"] <= 1.5 and result["utterances"] == 3
    with pytest.raises(ValueError, match="test split is for measuring"):
        warp_study(asr, tiny_speech, split="test")


def test_the_intelligibility_breakdown_says_where_a_voice_loses_words(speech_bundles, tiny_speech):
    """`omniforge eval speech --tts ... --breakdown ACOUSTIC`: beside the teacher's recordings and
    our speech, the recognizer reads our vocoder's speech of the teacher's own log-mels and of the
    acoustic model's teacher-forced log-mels, for the same sentences (a flite voice, timed by
    flite itself, and the default voice, timed by its Piper alignments)."""
    from omniforge_cli.eval_speech import tts_intelligibility
    from omniforge_training.starter.speech import STARTER_TTS_DIR

    asr, tts = speech_bundles
    speakers = [json.loads(line)["speaker"] for line in (tiny_speech / "items.jsonl").read_text().splitlines()
                if json.loads(line)["split"] == "test"]
    voice = next(v for v in ("rms", "awb", "kal16", "joe") if v in speakers)
    r = tts_intelligibility(tts, asr, tiny_speech, voice=voice, limit=2, threads=1, progress=False,
                            breakdown=STARTER_TTS_DIR / "acoustic")
    n = r["teacher_recordings"]["utterances"]
    assert n >= 1 and r["copy_synthesis"]["utterances"] == n and r["teacher_forced"]["utterances"] == n
    # our vocoder on the teacher's own log-mels is nearly as intelligible as the teacher
    assert r["copy_synthesis"]["cer"] <= r["teacher_recordings"]["cer"] + 0.2
    assert 0 <= r["teacher_forced"]["cer"] <= 1.0


def test_every_voice_can_be_judged_on_every_held_out_sentence_beside_a_baseline(speech_bundles, tiny_speech):
    """`omniforge eval speech --tts ... --sentences all --baseline OTHER`: a voice is judged on every
    held-out sentence, its teacher speaking those it never recorded as the corpus would, and a
    second bundle is judged on the same sentences and the same teacher readings in the same run."""
    from omniforge_cli.eval_speech import _judged_sentences, tts_intelligibility_per_voice
    from omniforge_training.data.speech import load_speech

    asr, tts = speech_bundles
    ds = load_speech(tiny_speech)
    held = {it["sentence"] for it in ds.split("test") if it["speaker"] != "slt"}
    voice = min(("rms", "awb", "kal16", "es-us-m3", "es-gb-f2"),
                key=lambda v: len([it for it in ds.split("test") if it["speaker"] == v]))
    pairs = _judged_sentences(ds, voice, "all")
    assert {it["sentence"] for it, _ in pairs} == held and len(pairs) == len(held)
    recorded = [r for _, r in pairs if r is not None]
    assert all(r["speaker"] == voice for r in recorded) and len(recorded) < len(held)

    r = tts_intelligibility_per_voice(tts, asr, tiny_speech, voices=[voice], threads=1, progress=False,
                                      sentences="all", baseline=tts)
    v = r["per_voice"][voice]
    assert v["teacher_recordings"]["utterances"] == len(held) and v["teacher_synthesised"] == len(held) - len(recorded)
    assert v["teacher_seconds"] > len(held) * 0.5 and v["teacher_recordings"]["cer"] < 0.6   # real, heard speech
    # the same bundle as its own baseline: the same sentences, readings and so the same gap
    assert v["baseline"]["wer_gap_points"] == v["wer_gap_points"]
    assert r["baseline"]["gap_sum_points"] == r["gap_sum_points"]
    with pytest.raises(ValueError, match="synthesise"):
        _judged_sentences(ds, "someone-else", "all")
