"""Cleaning: fix mojibake, normalise Unicode and whitespace, drop duplicates and other languages."""
from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Iterable

import ftfy
import numpy as np

_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANKS = re.compile(r"\n{3,}")


def normalise(text: str) -> str:
    text = ftfy.fix_text(text)
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # collapse runs of spaces inside lines, keep line structure (verse and dialogue need it)
    lines = [_SPACES.sub(" ", line).rstrip() for line in text.split("\n")]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip("\n")


def _shingles(text: str, n: int = 5) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    if len(words) < n:
        return {" ".join(words)}
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


class MinHashDeduper:
    """Near-duplicate detection: MinHash signatures with LSH banding over word 5-grams."""

    def __init__(self, *, num_perm: int = 128, bands: int = 32, threshold: float = 0.75) -> None:
        self.num_perm, self.bands, self.threshold = num_perm, bands, threshold
        self.rows = num_perm // bands
        self.buckets: dict[tuple, list[int]] = {}
        self.signatures: list[tuple[int, ...]] = []
        # random odd multipliers: a * h + b mod 2**64 is a permutation of 64-bit hashes
        rng = np.random.default_rng(0x5EED)
        self._a = rng.integers(0, 2**63, num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self._b = rng.integers(0, 2**63, num_perm, dtype=np.uint64)

    def _signature(self, text: str) -> tuple[int, ...]:
        hashes = np.array(
            [int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little")
             for s in _shingles(text)], dtype=np.uint64)
        # one universal hash per permutation, arithmetic mod 2**64: (num_perm, shingles)
        mixed = hashes[None, :] * self._a[:, None] + self._b[:, None]
        return tuple(mixed.min(axis=1).tolist())

    def is_duplicate(self, text: str) -> bool:
        """True if `text` is near an earlier one; otherwise remembers it."""
        sig = self._signature(text)
        candidates: set[int] = set()
        keys = [(band, sig[band * self.rows:(band + 1) * self.rows]) for band in range(self.bands)]
        for key in keys:
            candidates.update(self.buckets.get(key, ()))
        for idx in candidates:
            other = self.signatures[idx]
            if sum(x == y for x, y in zip(sig, other)) / self.num_perm >= self.threshold:
                return True
        idx = len(self.signatures)
        self.signatures.append(sig)
        for key in keys:
            self.buckets.setdefault(key, []).append(idx)
        return False


def detect_language(text: str) -> str:
    """ISO 639-1 code of the text's language (langdetect, profiles shipped in the package)."""
    from langdetect import DetectorFactory, LangDetectException, detect

    DetectorFactory.seed = 0  # deterministic
    try:
        return detect(text[:2000])
    except LangDetectException:
        return "unknown"


@dataclass
class CleanStats:
    read: int = 0
    kept: int = 0
    empty: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    other_language: int = 0
    languages: dict[str, int] = field(default_factory=dict)


def clean_documents(docs: Iterable[str], *, language: str | None = "en", min_chars: int = 1,
                    near_dedup: bool = True, stats: CleanStats | None = None) -> list[str]:
    stats = stats if stats is not None else CleanStats()
    seen: set[bytes] = set()
    deduper = MinHashDeduper() if near_dedup else None
    kept = []
    for doc in docs:
        stats.read += 1
        text = normalise(doc)
        if len(text.strip()) < min_chars:
            stats.empty += 1
            continue
        digest = hashlib.sha256(text.encode()).digest()
        if digest in seen:
            stats.exact_duplicates += 1
            continue
        seen.add(digest)
        if language is not None and len(text) >= 200:
            # short snippets (a line of verse, a stage direction) are too short to judge
            lang = detect_language(text)
            stats.languages[lang] = stats.languages.get(lang, 0) + 1
            if lang != language:
                stats.other_language += 1
                continue
        if deduper is not None and len(text) >= 200 and deduper.is_duplicate(text):
            stats.near_duplicates += 1
            continue
        kept.append(text)
        stats.kept += 1
    return kept
