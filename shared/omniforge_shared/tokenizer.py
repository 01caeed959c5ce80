"""Tokenizers for the text models: byte-level BPE (Hugging Face `tokenizers`) and char-level.

Both save to one JSON file inside a model bundle and load back without torch, so the
serving process can encode prompts and decode tokens.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Protocol


class Tokenizer(Protocol):
    kind: str
    vocab_size: int
    eos_id: int | None

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...
    def save(self, path: Path) -> None: ...


class CharTokenizer:
    """One token per distinct character of the training text; unknown characters map to `unk`."""

    kind = "char"
    UNK = "\ufffd"

    def __init__(self, chars: list[str]) -> None:
        if self.UNK not in chars:
            chars = [self.UNK, *chars]
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}
        self.vocab_size = len(chars)
        self.eos_id = None
        self._unk = self.stoi[self.UNK]

    @classmethod
    def train(cls, texts: Iterable[str]) -> "CharTokenizer":
        seen: set[str] = set()
        for text in texts:
            seen.update(text)
        return cls(sorted(seen))

    def encode(self, text: str) -> list[int]:
        stoi, unk = self.stoi, self._unk
        return [stoi.get(c, unk) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({"kind": "char", "chars": self.chars}, ensure_ascii=False))


class BPETokenizer:
    """Byte-level BPE: any text round-trips, no unknown tokens."""

    kind = "bpe"
    EOS = "<|endoftext|>"

    def __init__(self, tokenizer) -> None:
        self._tok = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()
        self.eos_id = tokenizer.token_to_id(self.EOS)

    @classmethod
    def train(cls, texts: Iterable[str], *, vocab_size: int = 4096) -> "BPETokenizer":
        from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[cls.EOS],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts)]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)

    def save(self, path: Path) -> None:
        self._tok.save(str(path))


def load_tokenizer(path: Path) -> Tokenizer:
    """Loads either kind from the JSON file `save` wrote."""
    path = Path(path)
    spec = json.loads(path.read_text())
    if spec.get("kind") == "char":
        return CharTokenizer(spec["chars"])
    from tokenizers import Tokenizer as HFTokenizer

    return BPETokenizer(HFTokenizer.from_file(str(path)))


def train_tokenizer(kind: str, texts: Iterable[str], *, vocab_size: int = 4096) -> Tokenizer:
    if kind == "char":
        return CharTokenizer.train(texts)
    if kind == "bpe":
        return BPETokenizer.train(texts, vocab_size=vocab_size)
    raise ValueError(f"tokenizer={kind!r} is not supported; use 'char' or 'bpe'")


class IncrementalDecoder:
    """Turns a growing list of token ids into text pieces, holding back incomplete UTF-8.

    Byte-level BPE can split one character over several tokens; decoding those alone gives
    U+FFFD, so a piece is released only once it no longer ends in a replacement character.
    Only the tokens since the last released piece are decoded, so each step costs the same
    however long the text grows.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self._start = 0          # ids[_start:] are not yet released as text

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        piece = self.tokenizer.decode(self.ids[self._start:])
        if piece.endswith("\ufffd") and self.tokenizer.kind == "bpe":
            return ""
        self._start = len(self.ids)
        return piece
