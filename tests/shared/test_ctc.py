"""CTC decoding: greedy, forced alignment and word times, and the LM beam search fixing a spelling
the acoustic frames got wrong."""
import numpy as np
import pytest

from omniforge_shared.ctc import BeamDecoder, forced_align, greedy, word_times

CHARS = " '" + "abcdefghijklmnopqrstuvwxyz"
IDS = {c: i + 1 for i, c in enumerate(CHARS)}


def emissions(text: str, *, frames_per_char: int = 3, noise: float = 0.5, seed: int = 0, peak: float = 8.0,
              start: int = 2) -> np.ndarray:
    """Log-probs where each character of `text` peaks on one frame, blanks elsewhere."""
    rng = np.random.default_rng(seed)
    T = start + frames_per_char * len(text) + 4
    logits = rng.normal(0, noise, (T, len(CHARS) + 1))
    logits[:, 0] += 3.0
    for k, c in enumerate(text):
        logits[start + k * frames_per_char, IDS[c]] += peak
    return logits - np.log(np.exp(logits).sum(1, keepdims=True))


def test_greedy_merges_repeats_and_drops_blanks():
    assert greedy(emissions("hello world"), CHARS) == "hello world"
    # a doubled letter needs a blank between its two peaks, which emissions() gives
    assert greedy(emissions("bookkeeper"), CHARS) == "bookkeeper"


def test_forced_alignment_puts_each_character_on_its_peak():
    text = "cat sat"
    logp = emissions(text, frames_per_char=4)
    spans = forced_align(logp, [IDS[c] for c in text])
    assert [a for a, _ in spans] == [2 + 4 * k for k in range(len(text))]
    assert forced_align(logp[:3], [IDS[c] for c in text]) == []        # more characters than frames


def test_word_times_follow_the_frames():
    logp = emissions("one two", frames_per_char=5)
    words = word_times(logp, "one two", CHARS, frame_seconds=0.04, offset=1.0)
    assert [w.word for w in words] == ["one", "two"]
    assert words[0].start == pytest.approx(1.0 + 2 * 0.04) and words[1].start == pytest.approx(1.0 + 22 * 0.04)
    assert all(w.end > w.start for w in words) and words[0].end <= words[1].start


def test_beam_search_with_the_lm_fixes_misheard_spellings(tmp_path):
    from omniforge_training.ngram_lm import train_kneser_ney, write_arpa

    corpus = ["the capital of france is paris", "paris is the capital of france", "the cat sat on the mat",
              "the capital city is large"] * 5
    write_arpa(train_kneser_ney([s.split() for s in corpus], 3), tmp_path / "lm.arpa")
    lexicon = sorted({w for s in corpus for w in s.split()})
    decoder = BeamDecoder(CHARS, lexicon, tmp_path / "lm.arpa", beam=16)
    logp = emissions("the capitl of frence is paris", frames_per_char=4, noise=1.0)
    assert greedy(logp, CHARS) != "the capital of france is paris"
    assert decoder(logp) == "the capital of france is paris"


def test_a_word_the_lm_text_never_used_can_still_be_written(tmp_path):
    """Words of the lexicon's word list enter the LM with the uniform share of unigram mass: a
    clearly said word that the LM text lacks comes out spelled right instead of as its neighbours."""
    from omniforge_training.ngram_lm import train_kneser_ney, write_arpa

    corpus = ["he was an able man", "he was a man", "an able woman was here"] * 5
    for extra, want in (((), False), (("amiable",), True)):
        write_arpa(train_kneser_ney([s.split() for s in corpus], 3, extra_vocab=extra), tmp_path / "lm.arpa")
        lexicon = sorted({w for s in corpus for w in s.split()} | set(extra))
        decoder = BeamDecoder(CHARS, lexicon, tmp_path / "lm.arpa", beam=16)
        heard = decoder(emissions("he was an amiable man", frames_per_char=4, noise=0.5))
        assert ("amiable" in heard.split()) is want, heard


def test_beam_search_keeps_a_weakly_said_last_word(tmp_path):
    """The end of the audio ends the last word: without a word boundary after its letters the
    lexicon search used to end on the previous word and drop it."""
    from omniforge_training.ngram_lm import train_kneser_ney, write_arpa

    text = "he was not an ill disposed young man"
    corpus = [text, "the young man was not ill", "he was disposed to go"] * 5
    write_arpa(train_kneser_ney([s.split() for s in corpus], 3), tmp_path / "lm.arpa")
    decoder = BeamDecoder(CHARS, sorted({w for s in corpus for w in s.split()}), tmp_path / "lm.arpa", beam=16)
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1.0, (2 + 4 * len(text) + 4, len(CHARS) + 1))
    logits[:, 0] += 3.0
    for k, c in enumerate(text):
        logits[2 + 4 * k, IDS[c]] += 8.0 if k < len(text) - 3 else 3.0      # "man" said weakly
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    e = np.ascontiguousarray(logp, dtype=np.float32)
    bare = decoder.decoder.decode(e.ctypes.data, e.shape[0], e.shape[1])[0]
    assert " ".join(decoder.words.get_entry(w) for w in bare.words if w >= 0) == "he was not an ill disposed young"
    assert decoder(logp) == text
