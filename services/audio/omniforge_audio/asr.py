"""The speech-recognition engine: numpy log-mel, the ONNX conformer-CTC, beam search with the
bundle's word LM (greedy without one), word timestamps from a forced alignment.

    1. audio (16 kHz mono, loudness-normalised) cut into windows of at most `window_seconds`, the
       cuts placed at the quietest 100 ms near each boundary (a word is rarely cut)
    2. every window's features go to a micro-batcher: calls that arrive together share one
       onnxruntime run (padded; the graph masks the padding). With several `warps` (the bundle's
       decoding settings), the window's spectrum is read through each warped filterbank and the
       model's most confident reading wins (mean best log-prob per frame): a voice pitched unlike
       any the model learned from is heard as if moved towards those it knows
    3. per window: beam search (or greedy), then the text's characters aligned to the frames for
       word start and end times; segments split where words are more than `pause` apart
"""
from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from omniforge_shared.audio import MelConfig, mel_filterbank, mel_of_power, power_spectrum
from omniforge_shared.bundle import Bundle
from omniforge_shared.ctc import BeamDecoder, Word, greedy, word_times
from omniforge_shared.encoders import cpu_session


@dataclass
class Transcript:
    text: str
    words: list[Word]
    segments: list[dict]
    duration: float


@dataclass
class _Job:
    feats: np.ndarray
    future: Future = field(default_factory=Future)


class MicroBatcher:
    """Runs the acoustic model for whatever calls are waiting, up to max_frames of padded features."""

    def __init__(self, session, *, max_batch: int = 8, max_frames: int = 16_000, wait_s: float = 0.004) -> None:
        self.session, self.max_batch, self.max_frames, self.wait_s = session, max_batch, max_frames, wait_s
        self.jobs: queue.Queue[_Job | None] = queue.Queue()
        self.batches = self.items = 0
        self.thread = threading.Thread(target=self._run, name="asr-batcher", daemon=True)
        self.thread.start()

    def __call__(self, feats: np.ndarray) -> tuple[np.ndarray, int]:
        return self.submit(feats).result()

    def submit(self, feats: np.ndarray) -> Future:
        job = _Job(feats)
        self.jobs.put(job)
        return job.future

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            batch = [job]
            try:
                while len(batch) < self.max_batch:
                    nxt = self.jobs.get(timeout=self.wait_s)
                    if nxt is None:
                        self.jobs.put(None)
                        break
                    if max(len(j.feats) for j in batch + [nxt]) * (len(batch) + 1) > self.max_frames:
                        self.jobs.put(nxt)          # next round; keeps the padding bounded
                        break
                    batch.append(nxt)
            except queue.Empty:
                pass
            try:
                T = max(len(j.feats) for j in batch)
                x = np.zeros((len(batch), T, batch[0].feats.shape[1]), np.float32)
                for i, j in enumerate(batch):
                    x[i, :len(j.feats)] = j.feats
                lengths = np.array([len(j.feats) for j in batch], np.int64)
                logp, olens = self.session.run(None, {"features": x, "lengths": lengths})
                self.batches += 1
                self.items += len(batch)
                for i, j in enumerate(batch):
                    j.future.set_result((logp[i, :int(olens[i])], int(olens[i])))
            except Exception as e:   # the callers see the error; the batcher stays up
                for j in batch:
                    if not j.future.done():
                        j.future.set_exception(e)

    def stop(self) -> None:
        self.jobs.put(None)


def cut_points(x: np.ndarray, rate: int, window_s: float) -> list[tuple[int, int]]:
    """[(start, end)] sample ranges of at most window_s, cut at the quietest 100 ms in the last third."""
    n, w = len(x), int(window_s * rate)
    if n <= w:
        return [(0, n)]
    hop = rate // 100
    energy = np.convolve(np.square(x[: n // hop * hop]).reshape(-1, hop).mean(1), np.ones(10) / 10, mode="same")
    out, start = [], 0
    while n - start > w:
        lo, hi = (start + int(w * 2 / 3)) // hop, (start + w) // hop
        cut = (lo + int(np.argmin(energy[lo:hi]))) * hop if hi > lo else start + w
        out.append((start, cut))
        start = cut
    out.append((start, n))
    return out


def segments_of(words: list[Word], pause: float = 0.6, max_words: int = 40) -> list[dict]:
    segs, cur = [], []
    for w in words:
        if cur and (w.start - cur[-1].end > pause or len(cur) >= max_words):
            segs.append(cur)
            cur = []
        cur.append(w)
    if cur:
        segs.append(cur)
    return [{"start": s[0].start, "end": s[-1].end, "text": " ".join(w.word for w in s)} for s in segs]


class ASREngine:
    backend_name = "onnxruntime"

    def __init__(self, bundle: Bundle, *, threads: int = 0, window_seconds: float = 20.0, max_batch: int = 8,
                 warps: Sequence[float] | None = None) -> None:
        self.bundle = bundle
        pre, dec = bundle.manifest["preprocess"], bundle.manifest["decoding"]
        self.mel = MelConfig(**pre["mel"])
        self.warps = tuple(float(w) for w in (dec.get("warps", [1.0]) if warps is None else warps)) or (1.0,)
        if not all(0.5 <= w <= 2.0 for w in self.warps):
            raise ValueError(f"spectrum warps must lie in [0.5, 2.0], got {list(self.warps)}")
        self.fbanks = [mel_filterbank(self.mel, w) for w in self.warps]
        self.warp_picks: Counter[float] = Counter()
        self.rate = int(pre["sample_rate"])
        self.chars = dec["chars"]
        self.frame_seconds = float(dec["frame_seconds"])
        self.window_seconds = window_seconds
        self.session = cpu_session(bundle.file("acoustic-model"), threads=threads)
        self.batcher = MicroBatcher(self.session, max_batch=max_batch)
        self.beam: BeamDecoder | None = None
        if bundle.has("language-model"):
            lexicon = bundle.file("lexicon").read_text(encoding="utf-8").split()
            self.beam = BeamDecoder(self.chars, lexicon, bundle.file("language-model"), beam=int(dec.get("beam", 32)),
                                    lm_weight=float(dec.get("lm_weight", 0.8)), word_score=float(dec.get("word_score", 1.0)))
        self.beam_lock = threading.Lock()

    @property
    def has_lm(self) -> bool:
        return self.beam is not None

    def readings(self, x: np.ndarray) -> list[np.ndarray]:
        """(frames, chars) log-probs of one window read through each warp (one STFT, one batch)."""
        power = power_spectrum(x, self.mel)
        futures = [self.batcher.submit(mel_of_power(power, self.mel, fb)) for fb in self.fbanks]
        return [f.result()[0] for f in futures]

    @staticmethod
    def confidence(logp: np.ndarray) -> float:
        """Mean best log-prob per frame: how sure the model is of its best path."""
        return float(logp.max(axis=1).mean())

    def logprobs(self, x: np.ndarray) -> np.ndarray:
        """(frames, chars) log-probs of one window; with several warps, of the most confident reading."""
        outs = self.readings(x)
        if len(outs) == 1:
            return outs[0]
        best = int(np.argmax([self.confidence(lp) for lp in outs]))
        self.warp_picks[self.warps[best]] += 1
        return outs[best]

    def decode(self, logp: np.ndarray, *, greedy_only: bool = False) -> str:
        if self.beam is None or greedy_only:
            return greedy(logp, self.chars)
        with self.beam_lock:                      # one flashlight decoder, not re-entrant
            return self.beam(logp)

    def transcribe(self, x: np.ndarray, *, greedy_only: bool = False, offset: float = 0.0) -> Transcript:
        """16 kHz mono float32 -> text, words with times, segments."""
        texts, words = [], []
        for a, b in cut_points(x, self.rate, self.window_seconds):
            logp = self.logprobs(x[a:b])
            text = self.decode(logp, greedy_only=greedy_only)
            if not text:
                continue
            texts.append(text)
            timed = word_times(logp, text, self.chars, frame_seconds=self.frame_seconds, offset=offset + a / self.rate)
            words += timed or [Word(w, round(offset + a / self.rate, 3), round(offset + b / self.rate, 3))
                               for w in text.split()]
        return Transcript(text=" ".join(texts), words=words, segments=segments_of(words),
                          duration=round(len(x) / self.rate, 3))

    def gauges(self) -> dict[str, float]:
        return {"asr_batches": float(self.batcher.batches), "asr_batched_items": float(self.batcher.items),
                "asr_warped_windows": float(sum(n for w, n in self.warp_picks.items() if w != 1.0))}

    def retire(self) -> None:
        self.stop()

    def stop(self) -> None:
        self.batcher.stop()
