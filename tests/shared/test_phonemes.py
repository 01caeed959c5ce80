"""The phonemiser: espeak-ng IPA per sentence with punctuation, ids with pads between symbols."""
from omniforge_shared.phonemes import BOS, EOS, PAD, SYMBOL_IDS, SYMBOLS, ids, phonemise


def test_sentences_clauses_and_stress():
    out = phonemise("Set a timer, please. Thank you!")     # espeak-ng ends a sentence at ". " + capital
    assert len(out) == 2
    first = "".join(out[0])
    assert first.startswith("sˈɛt ɐ tˈaɪmɚ, ") and first.endswith(".")
    assert "".join(out[1]).endswith("!")


def test_ids_interleave_pads_between_bos_and_eos():
    symbols = phonemise("hello.")[0]
    seq = ids(symbols)
    assert seq[0] == SYMBOL_IDS[BOS] and seq[-1] == SYMBOL_IDS[EOS]
    assert all(seq[i] == SYMBOL_IDS[PAD] for i in range(1, len(seq) - 1, 2))
    assert [SYMBOLS[i] for i in seq[2:-1:2]] == symbols
    assert len(set(SYMBOLS)) == len(SYMBOLS)


def test_text_without_words_gives_no_sentences():
    assert phonemise("...") == [] and phonemise("") == []
