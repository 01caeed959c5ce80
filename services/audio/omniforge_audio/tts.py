"""The text-to-speech engine: our normaliser and espeak-ng phonemiser, the ONNX acoustic model
(encoder, numpy length regulator, decoder) and the ONNX vocoder, streamed.

    text -> checks (empty, markup, script, length) -> normalised -> sentences of phonemes
    per sentence: ids -> encoder (hidden states, log-durations) -> durations / speed
                  -> each phoneme's state repeated for its frames -> decoder -> log-mel
                  -> the vocoder over stretches of frames (with context on both sides, so the
                     stretches join without seams): the first stretch is short, so the first
                     audio leaves before the sentence is done
"""
from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from omniforge_shared.bundle import Bundle
from omniforge_shared.encoders import cpu_session
from omniforge_shared.phonemes import SYMBOL_IDS, ids as symbol_ids, phonemise
from omniforge_shared.text_normalise import normalise

MAX_CHARS = 20_000
SPEED_RANGE = (0.5, 2.0)
FIRST_FRAMES = 24          # the first stretch: ~0.28 s of audio
STRETCH_FRAMES = 160       # then ~1.9 s per stretch
CONTEXT_FRAMES = 32        # the vocoder's receptive field is +-27 frames
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_MARKUP = re.compile(r"<\s*/?\s*(speak|prosody|break|voice|say-as|emphasis|phoneme|sub|audio|mark|p|s)\b[^>]*>", re.I)


class InvalidRequest(ValueError):
    """A request the engine cannot run; the message says what to send instead."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class AudioChunk:
    pcm: np.ndarray          # float32 in [-1, 1]
    sentence: int
    index: int


def check_text(text: str, *, max_chars: int = MAX_CHARS) -> str:
    """The speakable text, or InvalidRequest saying what is accepted."""
    if not text or not text.strip():
        raise InvalidRequest("text is empty; send the words to speak")
    if len(text) > max_chars:
        raise InvalidRequest(f"text is {len(text):,} characters; at most {max_chars:,} per request "
                             "(split it, or stream it in parts)", status=413)
    if _MARKUP.search(text):
        raise InvalidRequest("SSML markup is not supported; send plain text (use `speed` for the rate and "
                             "punctuation for pauses)")
    kept, foreign = [], 0
    for ch in unicodedata.normalize("NFC", text):
        cat = unicodedata.category(ch)
        if cat.startswith("L") and not ("LATIN" in unicodedata.name(ch, "") or ch.isascii()):
            foreign += 1
            kept.append(" ")
        elif cat in ("So", "Sk", "Cs", "Co", "Cn") or (cat == "Mn" and not ch.isascii()):
            kept.append(" ")              # emoji and pictographs are not read out
        else:
            kept.append(ch)
    clean = " ".join("".join(kept).split())
    clean = unicodedata.normalize("NFKD", clean).encode("ascii", "ignore").decode()   # café -> cafe
    if not re.search(r"[A-Za-z0-9]", clean):
        if foreign:
            raise InvalidRequest("this voice speaks English; the text is in another script. Send English text "
                                 "(Latin letters)")
        raise InvalidRequest("the text has no words to speak (only symbols or emoji); send English words")
    return clean


class TTSEngine:
    backend_name = "onnxruntime"

    def __init__(self, bundle: Bundle, *, threads: int = 0) -> None:
        m = bundle.manifest
        self.bundle = bundle
        self.voices: list[dict] = m["voices"]
        self.default_voice = m.get("default_voice") or self.voices[0]["id"]
        self.sample_rate = int(m["audio"]["sample_rate"])
        self.hop = int(m["audio"]["hop"])
        self.encoder = cpu_session(bundle.file("encoder"), threads=threads)
        self.decoder = cpu_session(bundle.file("decoder"), threads=threads)
        self.vocoder = cpu_session(bundle.file("vocoder"), threads=threads)
        self.lock = threading.Lock()          # one synthesis at a time per engine; they queue
        self.sentences = 0

    def voice(self, voice: str) -> dict:
        vid = voice or self.default_voice
        for v in self.voices:
            if v["id"] == vid:
                return v
        raise InvalidRequest(f"unknown voice {voice!r}; available: {', '.join(v['id'] for v in self.voices)} "
                             "(GET /voices)", status=404)

    def check(self, text: str, voice: str, speed: float) -> tuple[str, dict, float]:
        speed = speed or 1.0
        if not (SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]) or not np.isfinite(speed):
            raise InvalidRequest(f"speed {speed:g} is out of range; send {SPEED_RANGE[0]}-{SPEED_RANGE[1]} (1.0 = normal)",
                                 status=422)
        return check_text(text), self.voice(voice), speed

    def sentences_of(self, text: str) -> Iterator[list[int]]:
        """Phoneme ids per sentence, made as they are needed (a long text's first audio waits for
        its first sentence only)."""
        for part in _SENTENCE_END.split(normalise(text)):
            for sentence in phonemise(part):
                yield symbol_ids(sentence)

    def mel(self, ids: list[int], speaker: int, speed: float, duration_scale: float = 1.0) -> np.ndarray:
        x = np.array([ids], np.int64)
        hidden, logd = self.encoder.run(None, {"ids": x, "lengths": np.array([len(ids)], np.int64),
                                                "speaker": np.array([speaker], np.int64)})
        # duration_scale: the voice's calibration to its teacher's average rate (in the bundle)
        frames = np.clip(np.round(np.expm1(logd[0]) * duration_scale / speed), 0, 50).astype(np.int64)
        if frames.sum() == 0:
            frames[:] = 1
        regulated = np.repeat(hidden[0], frames, axis=0)[None]
        mel = self.decoder.run(None, {"frames": regulated.astype(np.float32),
                                      "frame_lengths": np.array([regulated.shape[1]], np.int64)})[0]
        return mel[0]

    def vocode(self, mel: np.ndarray) -> Iterator[np.ndarray]:
        """(T, 80) -> waveform pieces, the first after FIRST_FRAMES frames."""
        T = len(mel)
        a, size = 0, FIRST_FRAMES
        while a < T - 1:
            b = min(T, a + size)
            a0, b0 = max(0, a - CONTEXT_FRAMES), min(T, b + CONTEXT_FRAMES)
            wave = self.vocoder.run(None, {"mel": mel[None, a0:b0].astype(np.float32)})[0][0]
            end = (b - a0) * self.hop if b < T else len(wave)
            yield wave[(a - a0) * self.hop:end]
            a, size = b, STRETCH_FRAMES

    def synthesize(self, text: str, voice: str = "", speed: float = 1.0, *,
                   cancelled=lambda: False) -> Iterator[AudioChunk]:
        text, v, speed = self.check(text, voice, speed)
        index = 0
        pause = np.zeros(int(0.12 * self.sample_rate), np.float32)
        for k, ids in enumerate(self.sentences_of(text)):
            if k:
                yield AudioChunk(pause, k - 1, index)          # a breath between sentences
                index += 1
            with self.lock:
                mel = self.mel(ids, int(v["speaker"]), speed, float(v.get("duration_scale", 1.0)))
            for piece in self.vocode(mel):
                if cancelled():
                    return
                yield AudioChunk(np.clip(piece, -1, 1).astype(np.float32), k, index)
                index += 1
            self.sentences += 1
        if index == 0:
            raise InvalidRequest("the text has no words to speak; send English words")

    def gauges(self) -> dict[str, float]:
        return {"tts_sentences": float(self.sentences)}

    def retire(self) -> None:
        pass

    def stop(self) -> None:
        pass


__all__ = ["TTSEngine", "InvalidRequest", "check_text", "SYMBOL_IDS"]
