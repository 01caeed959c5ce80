"""Decoding a CTC recognizer's log-probabilities: greedy, and beam search with a word n-gram LM
(flashlight-text's lexicon decoder, KenLM inside, reading our ARPA file); word timestamps from a
forced alignment of the chosen text to the frames.

Token ids: 0 is the blank, then the model's characters (" " is the word boundary).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float


def greedy(logp: np.ndarray, chars: str) -> str:
    """(T, V) -> text: best token per frame, repeats merged, blanks dropped."""
    best = logp.argmax(-1)
    keep = np.concatenate([[True], best[1:] != best[:-1]]) & (best != 0)
    return " ".join("".join(chars[t - 1] for t in best[keep]).split())


def forced_align(logp: np.ndarray, tokens: list[int]) -> list[tuple[int, int]]:
    """Viterbi CTC alignment of `tokens` to (T, V) log-probs -> (first frame, last frame) per token.
    Tokens that cannot fit (more tokens than frames) make it give up: returns []."""
    T, L = len(logp), len(tokens)
    if L == 0 or T == 0:
        return []
    S = 2 * L + 1
    ext = np.zeros(S, np.int64)
    ext[1::2] = tokens
    neg = -1e30
    score = np.full(S, neg)
    score[0] = logp[0, 0]
    score[1] = logp[0, ext[1]]
    back = np.zeros((T, S), np.int8)            # 0 stay, 1 from s-1, 2 from s-2
    skip = np.zeros(S, bool)
    skip[3::2] = ext[3::2] != ext[1:-2:2]        # a token may follow the previous one directly if they differ
    for t in range(1, T):
        stay = score
        one = np.concatenate([[neg], score[:-1]])
        two = np.where(skip, np.concatenate([[neg, neg], score[:-2]]), neg)
        choice = np.stack([stay, one, two])
        back[t] = choice.argmax(0)
        score = choice.max(0) + logp[t, ext]
    s = S - 1 if score[S - 1] >= score[S - 2] else S - 2
    if score[s] <= neg / 2:
        return []
    path = np.zeros(T, np.int64)
    for t in range(T - 1, -1, -1):
        path[t] = s
        s -= int(back[t, s])
    spans: list[list[int]] = [[-1, -1] for _ in range(L)]
    for t, st in enumerate(path):
        if st % 2 == 1:
            k = st // 2
            if spans[k][0] < 0:
                spans[k][0] = t
            spans[k][1] = t
    return [tuple(s) for s in spans]


def word_times(logp: np.ndarray, text: str, chars: str, *, frame_seconds: float, offset: float = 0.0) -> list[Word]:
    """Start and end of every word of `text`, from the forced alignment of its characters (spaces
    between words are optional in the alignment: only the letters are aligned)."""
    table = {c: i + 1 for i, c in enumerate(chars)}
    words = text.split()
    tokens, owner = [], []
    for k, w in enumerate(words):
        for c in w:
            if c in table:
                tokens.append(table[c])
                owner.append(k)
    spans = forced_align(logp, tokens)
    if not spans:
        return []
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for (a, b), k in zip(spans, owner):
        first.setdefault(k, a)
        last[k] = b
    return [Word(w, round(offset + first[k] * frame_seconds, 3), round(offset + (last[k] + 1) * frame_seconds, 3))
            for k, w in enumerate(words) if k in first]


class BeamDecoder:
    """Lexicon-constrained CTC beam search with a KenLM-readable ARPA word LM (flashlight-text)."""

    def __init__(self, chars: str, lexicon: list[str], arpa: Path, *, beam: int = 32, lm_weight: float = 0.8,
                 word_score: float = 1.0, beam_threshold: float = 25.0) -> None:
        from flashlight.lib.text.decoder import (CriterionType, LexiconDecoder, LexiconDecoderOptions,
                                                 SmearingMode, Trie)
        from flashlight.lib.text.decoder.kenlm import KenLM
        from flashlight.lib.text.dictionary import Dictionary, create_word_dict

        self.chars = chars
        names = ["<b>", "|"] + [c for c in chars if c != " "]
        index = {c: names.index(c) if c != " " else 1 for c in chars}
        if [index[c] for c in chars] != list(range(1, len(chars) + 1)):
            raise ValueError("the character set must put the space first")
        self.tokens = Dictionary(names)
        spellings = {w: [[c for c in w] + ["|"]] for w in lexicon if w and all(c in index and c != " " for c in w)}
        self.words = create_word_dict({**spellings, "<unk>": []})     # the unknown word: in the LM, not the trie
        self.lm = KenLM(str(arpa), self.words)
        trie = Trie(len(names), 1)
        start = self.lm.start(False)
        for w, spells in spellings.items():
            wi = self.words.get_index(w)
            _, score = self.lm.score(start, wi)
            for sp in spells:
                trie.insert([self.tokens.get_index(c) for c in sp], wi, score)
        trie.smear(SmearingMode.MAX)
        opts = LexiconDecoderOptions(beam_size=beam, beam_size_token=len(names), beam_threshold=beam_threshold,
                                     lm_weight=lm_weight, word_score=word_score, unk_score=float("-inf"),
                                     sil_score=0.0, log_add=False, criterion_type=CriterionType.CTC)
        self.decoder = LexiconDecoder(opts, trie, self.lm, 1, 0, self.words.get_index("<unk>"), [], False)
        self.vocabulary = len(spellings)

    def __call__(self, logp: np.ndarray) -> str:
        # the end of the audio ends the last word: a word only leaves the lexicon trie through the
        # word boundary "|", which a recognizer seldom emits after the final letter, and flashlight
        # drops an unfinished word at the end (2 frames where "|" is certain let it finish)
        end = np.full((2, logp.shape[1]), -30.0, np.float32)
        end[:, 1] = 0.0
        e = np.ascontiguousarray(np.concatenate([logp, end]), dtype=np.float32)
        results = self.decoder.decode(e.ctypes.data, e.shape[0], e.shape[1])
        if not results:
            return greedy(logp, self.chars)
        return " ".join(self.words.get_entry(w) for w in results[0].words if w >= 0)
