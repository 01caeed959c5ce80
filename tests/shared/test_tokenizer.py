from omniforge_shared.tokenizer import (BPETokenizer, CharTokenizer, IncrementalDecoder, load_tokenizer,
                                        train_tokenizer)

TEXT = "To be, or not to be, that is the question: café, naïve, 東京.\n" * 20


def test_char_tokenizer_round_trips_and_maps_unknown_characters(tmp_path):
    tok = CharTokenizer.train([TEXT])
    assert tok.decode(tok.encode(TEXT)) == TEXT
    assert tok.decode(tok.encode("Z")) == CharTokenizer.UNK       # never seen in training
    tok.save(tmp_path / "t.json")
    assert load_tokenizer(tmp_path / "t.json").encode(TEXT) == tok.encode(TEXT)


def test_bpe_tokenizer_round_trips_any_text(tmp_path):
    tok = train_tokenizer("bpe", [TEXT], vocab_size=300)
    assert isinstance(tok, BPETokenizer) and tok.eos_id is not None
    for text in (TEXT, "unseen words: Ωmega 🙂"):
        assert tok.decode(tok.encode(text)) == text
    tok.save(tmp_path / "t.json")
    assert load_tokenizer(tmp_path / "t.json").encode(TEXT) == tok.encode(TEXT)


def test_incremental_decoding_never_splits_a_character():
    tok = train_tokenizer("bpe", [TEXT], vocab_size=260)
    ids = tok.encode("🙂 東京 🙂")
    dec = IncrementalDecoder(tok)
    pieces = [dec.push(i) for i in ids]
    assert "".join(pieces) == "🙂 東京 🙂"
    assert all("\ufffd" not in p for p in pieces)


def test_incremental_pieces_add_up_to_the_whole_decode():
    tok = train_tokenizer("bpe", [TEXT], vocab_size=300)
    text = ("Naïve café owners in 東京 said: “To be, or not to be” 🙂 — then left.\n" * 8)
    ids = tok.encode(text)
    dec = IncrementalDecoder(tok)
    assert "".join(dec.push(i) for i in ids) == tok.decode(ids) == text
    char = CharTokenizer.train([text])
    dec = IncrementalDecoder(char)
    assert "".join(dec.push(i) for i in char.encode(text)) == text
