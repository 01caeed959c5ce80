"""The text generation engine: continuous batching over a decoder with a KV cache.

Requests join a running batch at the next step instead of waiting for it to finish. One
scheduler thread owns the batch; each step it
  1. admits waiting requests: a short prompt joins the running batch and is fed to the decode
     steps a token a step; longer prompts (or any, when nothing runs) are prefilled together
     into free cache rows in a step of their own,
  2. runs one decode step for every running sequence,
  3. samples a token per sequence whose prompt is all in the cache and hands new text to the
     request's asyncio queue,
  4. drops finished or cancelled sequences, moving the last rows into the freed ones.
Sequence i of the batch owns row i of the KV cache; the backend writes each step's keys and
values into it in place, so a step never copies what is already cached.
The engine imports neither gRPC nor HTTP: servicers translate to and from it.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import AsyncIterator

import numpy as np

from omniforge_shared.backends import DecoderBackend
from omniforge_shared.backends.base import KVCache
from omniforge_shared.tokenizer import IncrementalDecoder, Tokenizer

from .sampling import SamplingParams, sample_tokens

logger = logging.getLogger(__name__)


class InvalidRequest(ValueError):
    """The request cannot be served as sent; the message says what to send instead."""


class EngineStopped(RuntimeError):
    pass


@dataclass
class Piece:
    text: str
    finish_reason: str = ""        # set on the last piece: "length" | "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_at: float = 0.0    # time.perf_counter() when the first token was sampled


@dataclass
class Sequence:
    prompt_ids: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue
    rng: np.random.Generator
    decoder: IncrementalDecoder
    ids: list[int] = field(default_factory=list)     # prompt + generated
    fed: int = 0                                     # tokens whose keys and values are in the cache
    text: str = ""                                   # generated text so far
    sent: int = 0                                    # characters of `text` already handed out
    stream: bool = True                              # False: one piece, at the end
    first_token_at: float = 0.0
    handed_out_at: float = 0.0                       # when the last piece was handed out
    cancelled: bool = False
    finish_reason: str = ""

    @property
    def generated(self) -> int:
        return len(self.ids) - len(self.prompt_ids)

    def emit(self, piece) -> None:
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, piece)
        except RuntimeError:  # the caller's event loop is gone
            self.cancelled = True


class TextEngine:
    def __init__(self, backend: DecoderBackend, tokenizer: Tokenizer, *, max_batch_size: int = 16,
                 max_tokens_limit: int | None = None, stream_interval_s: float = 0.0,
                 feed_prompt_tokens: int = 8) -> None:
        """`stream_interval_s`: a streamed sequence hands out its text at most this often (its
        first piece at once), so a busy server sends a few tokens a message instead of one.
        `feed_prompt_tokens`: a prompt this short joins a running batch at once and is fed to its
        decode steps a token a step, instead of stopping every running sequence for a prefill
        step of its own (under load arrivals are spread out, and each such step costs as much as
        a decode step of the whole batch); 0 prefills every prompt."""
        self.backend = backend
        self.spec = backend.spec
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.stream_interval_s = stream_interval_s
        self.feed_prompt_tokens = feed_prompt_tokens
        self.context_length = self.spec.context_length
        self.max_tokens_limit = min(max_tokens_limit or self.context_length, self.context_length)
        self._waiting: queue.Queue[Sequence] = queue.Queue()
        self._ready: list[Sequence] = []   # taken off the queue, waiting for a prefill step
        self._running: list[Sequence] = []
        self._pending: list[tuple[Sequence, Piece]] = []   # pieces sampled but not yet handed out
        self._prefilled_last = False
        self._cache = KVCache(self.spec, max_batch_size)
        self._wake = threading.Event()
        self._submit_lock = threading.Lock()
        self._stopping = False
        self._retire_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="text-engine", daemon=True)
        self._thread.start()
        self.steps = 0
        self.prefill_steps = 0
        self.max_batch_seen = 0
        self.cancelled = 0                  # sequences dropped because their caller went away

    # ---- the async surface used by servicers -------------------------------------------

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def gauges(self) -> dict[str, float]:
        """Read by the service's metrics endpoint at scrape time."""
        return {"engine_queue_depth_requests": self._waiting.qsize() + len(self._ready),
                "running_batch_size_sequences": len(self._running)}

    def encode_prompt(self, prompt: str) -> list[int]:
        ids = self.tokenizer.encode(prompt)
        if not ids:  # an empty prompt starts from the document separator
            ids = [self.tokenizer.eos_id] if self.tokenizer.eos_id is not None else self.tokenizer.encode("\n")
        return ids

    def validate(self, prompt_ids: list[int], params: SamplingParams) -> None:
        problems = params.problems(max_tokens_limit=self.max_tokens_limit)
        if problems:
            raise InvalidRequest("; ".join(problems))
        n = len(prompt_ids)
        if n >= self.context_length:
            raise InvalidRequest(f"prompt is {n} tokens; the model's context is {self.context_length} tokens, "
                                 f"send a prompt of at most {self.context_length - 1} tokens")
        if n + params.max_tokens > self.context_length:
            raise InvalidRequest(f"prompt ({n} tokens) + max_tokens ({params.max_tokens}) exceeds the context "
                                 f"of {self.context_length} tokens; send max_tokens <= {self.context_length - n}")

    async def generate(self, prompt: str, params: SamplingParams, *, stream: bool = True) -> AsyncIterator[Piece]:
        """Yields text pieces as they are decoded; the last one carries finish_reason. Pieces
        that arrive while the caller is busy come merged into one. With stream=False the
        whole text comes as one piece at the end (no hand-off per token).

        Closing the iterator early (client gone) cancels the sequence at the next step.
        """
        if self._stopping:
            raise EngineStopped("engine is shutting down")
        prompt_ids = self.encode_prompt(prompt)
        self.validate(prompt_ids, params)
        loop = asyncio.get_running_loop()
        seq = Sequence(prompt_ids=prompt_ids, params=params, loop=loop, out=asyncio.Queue(),
                       rng=np.random.default_rng(params.seed), decoder=IncrementalDecoder(self.tokenizer),
                       ids=list(prompt_ids), stream=stream)
        with self._submit_lock:   # never enqueue behind the scheduler's last drain
            if self._stopping:
                raise EngineStopped("engine is shutting down")
            self._waiting.put(seq)
        self._wake.set()
        try:
            while True:
                piece = _merged(await seq.out.get(), seq.out)
                yield piece
                if piece.finish_reason:
                    return
        finally:
            if not seq.finish_reason:
                seq.cancelled = True
                self._wake.set()

    def score(self, text: str) -> tuple[float, int]:
        """Sum of log p(token | prefix) over the text's tokens after the first, and their count."""
        ids = self.tokenizer.encode(text)
        if len(ids) < 2:
            raise InvalidRequest("text must be at least 2 tokens long to be scored")
        if len(ids) > self.context_length:
            raise InvalidRequest(f"text is {len(ids)} tokens; send at most {self.context_length}")
        x = np.array([ids], np.int64)
        logits = self.backend.forward(x, np.array([len(ids)], np.int32), KVCache(self.spec, 1), 0)
        logits = logits[0, :-1].astype(np.float64)
        logits -= logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        return float(logp[np.arange(len(ids) - 1), ids[1:]].sum()), len(ids) - 1

    def retire(self) -> None:
        """Finishes what it has (and what arrives in the next second), then stops: used when a
        newer model version takes over, so in-flight requests end on the version they began on."""
        self._retire_at = time.monotonic()
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Ends the scheduler; requests still in flight get EngineStopped."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)

    # ---- the scheduler thread ------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            if not self._running and not self._ready and self._waiting.empty():
                self._flush()
                if self._retire_at is not None and time.monotonic() - self._retire_at > 1.0:
                    with self._submit_lock:
                        if self._waiting.empty():
                            self._stopping = True
                            break
                    continue
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            try:
                self._step()
            except Exception as e:  # a failing step fails its requests, never the process
                self._flush()
                logger.exception("generation step failed")
                for seq in self._running + self._drain_waiting():
                    seq.emit(e)
                self._reset()
        with self._submit_lock:
            self._stopping = True
            leftovers = self._running + self._drain_waiting()
        self._flush()
        for seq in leftovers:
            seq.emit(EngineStopped("engine is shutting down"))

    def _drain_waiting(self) -> list[Sequence]:
        out, self._ready = self._ready, []
        while True:
            try:
                out.append(self._waiting.get_nowait())
            except queue.Empty:
                return out

    def _reset(self) -> None:
        self._running = []

    def _step(self) -> None:
        self._drop_cancelled()
        # 1. admit waiting requests, first come first served. While others run, a short prompt
        # joins the decode batch; the rest are prefilled together, never twice in a row, so a
        # steady stream of arrivals cannot starve the running sequences
        ready = [s for s in self._drain_waiting() if not s.cancelled]
        room = self.max_batch_size - len(self._running)
        may_prefill = not (self._prefilled_last and self._running)
        joining, new = [], []
        for seq in ready:
            if room == 0:
                self._ready.append(seq)
            elif self._running and len(seq.prompt_ids) <= self.feed_prompt_tokens:
                joining.append(seq)
                room -= 1
            elif may_prefill:
                new.append(seq)
                room -= 1
            else:
                self._ready.append(seq)
        self._prefilled_last = bool(new)
        self._running.extend(joining)      # fed from the next decode step on
        if new:
            self._prefill(new)
        # 2. one decode step for every running sequence
        if not new and self._running:
            self._decode()
        self.steps += 1
        self.max_batch_seen = max(self.max_batch_seen, len(self._running))

    def _prefill(self, new: list[Sequence]) -> None:
        """Runs the prompts in the next free cache rows, samples each one's first token."""
        lengths = np.array([len(s.prompt_ids) for s in new], np.int32)
        ids = np.zeros((len(new), int(lengths.max())), np.int64)
        for i, s in enumerate(new):
            ids[i, :lengths[i]] = s.prompt_ids                # right padding
        first = len(self._running)
        self._running.extend(new)          # before the step: a failing step fails them too
        self._flush()
        logits = self.backend.forward(ids, lengths, self._cache, first)
        self.prefill_steps += 1
        for seq in new:
            seq.fed = len(seq.prompt_ids)
        self._advance(new, logits[np.arange(len(new)), lengths - 1], range(first, first + len(new)))

    def _decode(self) -> None:
        """Feeds each row its next token: the last sampled one, or a joining prompt's next one."""
        ids = np.array([[s.ids[s.fed]] for s in self._running], np.int64)
        lengths = np.array([s.fed + 1 for s in self._running], np.int32)
        self._flush()
        logits = self.backend.forward(ids, lengths, self._cache, 0)
        for seq in self._running:
            seq.fed += 1
        # rows whose whole context is now cached sample a token; a prompt still being fed does not
        rows = [i for i, s in enumerate(self._running) if s.fed == len(s.ids)]
        if len(rows) == len(self._running):
            self._advance(list(self._running), logits[:, 0], rows)
        elif rows:
            self._advance([self._running[i] for i in rows], logits[rows, 0], rows)

    def _advance(self, seqs: list[Sequence], last_logits: np.ndarray, rows) -> None:
        """Samples one token per sequence, emits its text, retires finished sequences."""
        finished, out = [], []
        now = time.perf_counter()
        tokens = sample_tokens(last_logits, [s.params for s in seqs], [s.rng for s in seqs], [s.ids for s in seqs])
        for seq, row, token in zip(seqs, rows, tokens):
            seq.ids.append(token)
            seq.first_token_at = seq.first_token_at or now
            if token == self.tokenizer.eos_id and not seq.params.ignore_eos:
                seq.finish_reason = "stop"
            else:
                seq.text += seq.decoder.push(token)
                self._check_stop(seq)
            if not seq.finish_reason and seq.generated >= seq.params.max_tokens:
                seq.finish_reason = "length"
            if seq.finish_reason or (seq.stream and now - seq.handed_out_at >= self.stream_interval_s):
                piece = self._piece(seq)
                if piece is not None:
                    seq.handed_out_at = now
                    out.append((seq, piece))
            if seq.finish_reason:
                finished.append(row)
        self._pending.extend(out)
        if finished:
            self._remove(set(finished))

    def _flush(self) -> None:
        """Hands out the pending pieces. Called right before the next forward step: waking an
        event loop hands it the GIL, and the step's native code gives the GIL up, so the loop
        handles the pieces while the step computes instead of while this thread waits."""
        if self._pending:
            pieces, self._pending = self._pending, []
            _deliver(pieces)

    def _check_stop(self, seq: Sequence) -> None:
        for stop in seq.params.stop:
            at = seq.text.find(stop, max(0, seq.sent - len(stop)))
            if at != -1:
                seq.text = seq.text[:at]
                seq.finish_reason = "stop"

    def _piece(self, seq: Sequence) -> Piece | None:
        """The text decoded since the last piece, or None when there is nothing to hand out yet."""
        if seq.finish_reason:
            upto = len(seq.text)
        else:
            # hold back a tail that could still become a stop sequence
            upto = len(seq.text) - _longest_stop_prefix(seq.text, seq.params.stop)
        piece = seq.text[seq.sent:upto]
        if not piece and not seq.finish_reason:
            return None
        seq.sent = max(seq.sent, upto)
        return Piece(piece, seq.finish_reason, len(seq.prompt_ids), seq.generated, seq.first_token_at)

    def _drop_cancelled(self) -> None:
        gone = {i for i, s in enumerate(self._running) if s.cancelled}
        if gone:
            self.cancelled += len(gone)
            self._remove(gone)

    def _remove(self, rows: set[int]) -> None:
        """Drops sequences; the last running rows move into the freed ones (a copy per hole)."""
        n = len(self._running) - len(rows)
        holes = sorted(r for r in rows if r < n)
        movers = [r for r in range(n, len(self._running)) if r not in rows]
        for hole, src in zip(holes, movers):
            self._cache.move(src, hole, self._running[src].fed)
            self._running[hole] = self._running[src]
        del self._running[n:]


def _deliver(pieces: list[tuple[Sequence, Piece]]) -> None:
    """Hands a step's pieces to their event loops: one wake-up per loop, not one per sequence."""
    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for seq, piece in pieces:
        by_loop.setdefault(seq.loop, []).append((seq.out, piece))
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_put_all, items)
        except RuntimeError:  # the caller's event loop is gone: nobody waits for these any more
            for seq, _ in pieces:
                if seq.loop is loop:
                    seq.cancelled = True


def _merged(piece, out: asyncio.Queue) -> Piece:
    """`piece` joined with the pieces already waiting behind it (raises an error handed out)."""
    if isinstance(piece, BaseException):
        raise piece
    while not piece.finish_reason and not out.empty():
        nxt = out.get_nowait()
        if isinstance(nxt, BaseException):
            raise nxt
        piece = Piece(piece.text + nxt.text, nxt.finish_reason, nxt.prompt_tokens, nxt.completion_tokens,
                      piece.first_token_at)
    return piece


def _put_all(items) -> None:
    for out, piece in items:
        out.put_nowait(piece)


def _longest_stop_prefix(text: str, stops) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                best = max(best, k)
                break
    return best
