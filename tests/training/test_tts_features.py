"""What the acoustic model learns from: durations mapped onto our phonemes, pitch, energy."""
import numpy as np

from omniforge_training.data.tts_features import align_durations, per_phoneme, utterance_features, yin_f0


def test_durations_follow_matching_symbols_and_keep_the_total():
    teacher = list("^_a_b_ʲ_c_$")
    durations = [1, 2, 5, 1, 3, 1, 2, 1, 4, 1, 2]
    ours = list("^_a_b_c_$")
    out = align_durations(teacher, durations, ours)
    assert sum(out) == sum(durations)
    assert out[:5] == [1, 2, 5, 1, 3]           # matches keep their frames
    assert out[5] == 1 + 2 + 1                  # ʲ and its pad go to the previous kept symbol
    assert align_durations(list("^_x_$"), [1, 1, 6, 1, 1], list("^_yz_$"))[2:4] == [3, 3]


def test_yin_finds_the_pitch_and_silence_is_unvoiced():
    rate = 22_050
    t = np.arange(rate) / rate
    x = np.concatenate([0.5 * np.sin(2 * np.pi * 180 * t), np.zeros(rate // 2)]).astype(np.float32)
    f0 = yin_f0(x, rate, 256, n_frames=len(x) // 256)
    assert abs(np.median(f0[5:70]) - 180) < 2
    assert (f0[95:] == 0).all()


def test_utterance_features_shapes():
    rate = 22_050
    x = (0.3 * np.sin(2 * np.pi * 150 * np.arange(256 * 40) / rate)).astype(np.float32)
    feats = utterance_features(x, [10, 20, 10])
    assert feats["mel"].shape == (40, 80) and feats["pitch"].shape == (3,)
    assert feats["voiced"].all() and abs(np.exp(feats["pitch"][1]) - 150) < 3
    assert per_phoneme(np.arange(6.0), [2, 0, 4]).tolist() == [0.5, 0.0, 3.5]


def test_dtw_times_the_same_phonemes_in_another_recording():
    """A second 'voice': every phoneme held a different length, another channel (an offset) and
    noise; the durations transferred through DTW are the ones it spoke."""
    from omniforge_training.data.tts_features import dtw_path, transfer_durations

    rng = np.random.default_rng(0)
    n = 40
    sounds = rng.normal(size=(n, 80)) * 2
    durations = rng.integers(1, 9, n)
    spoken = np.maximum(1, np.round(durations * rng.uniform(0.6, 1.8, n))).astype(int)

    def record(lengths, offset):
        frames = np.concatenate([np.repeat(sounds[k][None], lengths[k], 0) for k in range(n)])
        return frames + rng.normal(size=frames.shape) * 0.3 + offset

    got = transfer_durations(durations.tolist(), record(durations, 0.0), record(spoken, 1.5))
    assert sum(got) == spoken.sum() and len(got) == n
    assert np.abs(np.array(got) - spoken).mean() < 0.2
    a, b = dtw_path(rng.random((5, 7)))
    assert (a[0], b[0], a[-1], b[-1]) == (0, 0, 4, 6) and (np.diff(a) >= 0).all() and (np.diff(b) >= 0).all()


def test_espeak_times_its_own_recording_phoneme_by_phoneme(tmp_path):
    """A recording made by the espeak-ng command (trimmed as the starter corpus trims it) is timed
    by the library's phoneme events: the durations cover it exactly, each vowel gets frames where
    espeak-ng said it, a quieter copy is timed alike, and a recording at another rate is refused
    rather than mistimed; one utterance leaves nothing behind for the next."""
    import shutil
    import subprocess

    import pytest
    import soundfile as sf

    from omniforge_shared.audio import log_mel
    from omniforge_shared.phonemes import SYMBOLS, Espeak, ids, phonemise
    from omniforge_training.data.starter_speech import trim_silence
    from omniforge_training.data.tts_features import TTS_MEL, espeak_durations

    if shutil.which("espeak-ng") is None:
        pytest.skip("the espeak-ng command is not installed")
    text = "set a timer for nine thirty, please."
    wav = tmp_path / "said.wav"
    subprocess.run(["espeak-ng", "-v", "en-us+m3", "-s", "160", "-p", "40", "-w", str(wav), text], check=True)
    x, rate = sf.read(wav, dtype="float32")
    assert rate == TTS_MEL.sample_rate
    recording = trim_silence(x)
    n_frames = len(log_mel(recording, TTS_MEL))
    pcm, events = Espeak.synthesise(text, "en-us+m3", rate=160, pitch=40)
    other, _ = Espeak.synthesise("and again in another voice.", "en-gb+f2", rate=150, pitch=60)
    again, events_again = Espeak.synthesise(text, "en-us+m3", rate=160, pitch=40)
    assert other and (again, events_again) == (pcm, events)      # nothing carries over from the last utterance
    symbols, durations = espeak_durations(recording, pcm, events, n_frames)
    assert espeak_durations(0.8 * recording, pcm, events, n_frames) == (symbols, durations)   # a quieter copy
    assert sum(durations) == n_frames and len(symbols) == len(durations)
    spoken = [name for name, _ in events if name]
    assert "aɪ" in spoken and "θ" in spoken
    vowels = [d for s, d in zip(symbols, durations) if s in "ɛɐaiɚɜ"]
    assert min(vowels) >= 1 and sum(vowels) > 0.15 * n_frames     # every vowel holds time (and shares it with its pad)
    # the phonemiser still answers as before after a synthesis switched the voice
    assert phonemise(text)[0][:4] == ["s", "ˈ", "ɛ", "t"]
    assert len(ids(phonemise(text)[0])) > len(spoken) and SYMBOLS[ids(phonemise(text)[0])[0]] == "^"
    faster, _ = Espeak.synthesise(text, "en-us+m3", rate=190, pitch=40)
    assert espeak_durations(recording, faster, events, n_frames) is None


def test_flite_times_its_own_recording_phone_by_phone(tmp_path):
    """A recording made by the flite command (resampled and trimmed as the starter corpus does it)
    is timed by the library's phone times: the library says it sample for sample (a clustergen voice
    too, whose excitation draws on rand()), the durations cover it, a vowel is where flite said it,
    and a recording at another stretch is refused rather than mistimed."""
    import shutil
    import subprocess

    import pytest
    import soundfile as sf

    from omniforge_shared.audio import log_mel, resample
    from omniforge_training.data.flite import Flite, flite_events
    from omniforge_training.data.starter_speech import trim_silence
    from omniforge_training.data.tts_features import TTS_MEL, events_durations

    if shutil.which("flite") is None:
        pytest.skip("the flite command is not installed")
    text = "set a timer for nine thirty, please."
    wav = tmp_path / "said.wav"
    subprocess.run(["flite", "-voice", "rms", "--setf", "duration_stretch=1.10", "-t", text, "-o", str(wav)], check=True)
    said, rate = sf.read(wav, dtype="int16")
    Flite.synthesise("and another voice before it.", "kal16")
    samples, lib_rate, phones = Flite.synthesise(text, "rms", duration_stretch=1.1)
    again, _, phones_again = Flite.synthesise(text, "rms", duration_stretch=1.1)
    assert lib_rate == rate and np.array_equal(samples, said) and np.array_equal(again, said)
    assert phones == phones_again and phones[0][0] == "pau" and "ay" in [p for p, _ in phones]

    def corpus(x):                     # what the starter corpus stores
        return trim_silence(resample(x.astype(np.float32) / 32768.0, rate, TTS_MEL.sample_rate))

    recording = corpus(said)
    n_frames = len(log_mel(recording, TTS_MEL))
    speech = resample(samples.astype(np.float32) / 32768.0, rate, TTS_MEL.sample_rate)
    events = flite_events(phones, TTS_MEL.sample_rate)
    symbols, durations = events_durations(recording, speech, events, n_frames)
    assert sum(durations) == n_frames and len(symbols) == len(durations)
    assert "aɪ" in [name for name, _ in events] and "θ" in symbols
    # the vowel of "timer" holds frames near where flite said it (the trim moved everything by one offset)
    starts = np.cumsum([0] + durations)
    k = symbols.index("a")
    lead = (len(speech) - len(recording)) / TTS_MEL.hop              # at most the trimmed silence, in frames
    said_at = next(start for name, start in events if name == "aɪ") / TTS_MEL.hop
    assert durations[k] >= 1 and -1 <= said_at - starts[k] <= lead + 1
    slower, _, slow_phones = Flite.synthesise(text, "rms", duration_stretch=1.3)
    slow_speech = resample(slower.astype(np.float32) / 32768.0, rate, TTS_MEL.sample_rate)
    assert events_durations(recording, slow_speech, flite_events(slow_phones, TTS_MEL.sample_rate), n_frames) is None


def test_the_tts_recipe_times_a_flite_recording_by_flite_when_asked(tiny_speech):
    """`train tts --flite-timing`: a flite recording of the corpus gets flite's phone times, covering
    every one of its mel frames, on our phonemiser's symbols."""
    from omniforge_shared.audio import mel_filterbank
    from omniforge_training.data.speech import load_speech
    from omniforge_training.data.tts_features import TTS_MEL
    from omniforge_training.train_tts import group_features, our_ids

    ds = load_speech(tiny_speech)
    item = next(it for it in ds.items if "duration_stretch" in it)
    (row, how), = group_features(ds, None, [item], {}, mel_filterbank(TTS_MEL), flite=True)
    assert how == "flite" and int(row["durations"].sum()) == len(row["mel"])
    assert list(row["ids"]) == our_ids(item["spoken"])
