"""gRPC servicer: omniforge.v1.AudioService messages to the recognition and speech engines.

Bad input is refused with INVALID_ARGUMENT (or NOT_FOUND for an unknown voice) and the HTTP
status the gateway should answer with in the `http-status` trailer (413 too long, 415 not
audio we read, 422 out of range): the message says what is accepted.
"""
from __future__ import annotations

import asyncio

import grpc
import numpy as np

from omniforge_proto.v1 import audio_pb2, audio_pb2_grpc
from omniforge_shared.audio import AudioError, AudioLimits, normalise_loudness, prepare_audio, resample
from omniforge_shared.serving import ModelNotFound, ModelPool, label_call, list_models_reply

from .asr import Transcript, segments_of
from .tts import InvalidRequest

_DONE = object()
STREAM_RATES = (8_000, 48_000)


def _response(t: Transcript, loaded, *, timestamps: bool) -> audio_pb2.TranscribeResponse:
    return audio_pb2.TranscribeResponse(
        text=t.text, duration=t.duration, model=loaded.name, model_version=loaded.version, language="en",
        segments=[audio_pb2.Segment(start=s["start"], end=s["end"], text=s["text"]) for s in t.segments],
        words=[audio_pb2.WordTiming(word=w.word, start=w.start, end=w.end) for w in t.words] if timestamps else [])


async def _refuse(context, message: str, status: int = 400, code=grpc.StatusCode.INVALID_ARGUMENT):
    context.set_trailing_metadata((("http-status", str(status)),))
    await context.abort(code, message)


class AudioServicer(audio_pb2_grpc.AudioServiceServicer):
    def __init__(self, pool: ModelPool, *, limits: AudioLimits, partial_every_s: float = 1.0) -> None:
        self.pool, self.limits, self.partial_every_s = pool, limits, partial_every_s
        self.audio_seconds = pool.metrics.counter("audio_seconds_total", "seconds of audio transcribed or synthesised",
                                                  ["model", "version", "direction"])

    async def _model(self, ref, context, task: str):
        try:
            loaded = self.pool.get(ref.name, ref.version, task=task)
        except ModelNotFound as e:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        label_call(model=loaded.name, version=loaded.version)
        return loaded

    @staticmethod
    async def _language(language: str, context) -> None:
        if language and language.lower().split("-")[0] != "en":
            await _refuse(context, f"language {language!r} is not recognised by this model; it knows English: "
                                   "send language 'en' or leave it out")

    async def Transcribe(self, request, context):
        loaded = await self._model(request.model, context, "speech-recognition")
        await self._language(request.language, context)
        if not request.audio:
            await _refuse(context, "no audio given; send a WAV, FLAC or OGG file (MP3, M4A or WebM with ffmpeg)")
        engine = loaded.engine

        def run() -> Transcript:
            x = prepare_audio(request.audio, engine.rate, limits=self.limits)
            return engine.transcribe(x, greedy_only=request.greedy)

        try:
            t = await asyncio.to_thread(run)
        except AudioError as e:
            await _refuse(context, str(e), e.status)
        self.audio_seconds.labels(loaded.name, loaded.version, "in").inc(t.duration)
        return _response(t, loaded, timestamps=request.timestamps)

    async def StreamTranscribe(self, request_iterator, context):
        """Audio in as it comes; a partial result every `partial_every_s`, a final segment at each
        pause (or when the open segment reaches the engine's window), everything at the end."""
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("message") != "config":
            await _refuse(context, "the first message must be the config (model, sample_rate); PCM follows")
        cfg = first.config
        loaded = await self._model(cfg.model, context, "speech-recognition")
        await self._language(cfg.language, context)
        rate = cfg.sample_rate or 16_000
        if not STREAM_RATES[0] <= rate <= STREAM_RATES[1]:
            await _refuse(context, f"sample_rate {rate} is out of range; send {STREAM_RATES[0]:,}-{STREAM_RATES[1]:,} Hz "
                                   "16-bit mono PCM", 422)
        engine = loaded.engine
        target = engine.rate
        pending = np.zeros(0, np.float32)       # audio of the open segment, at the model's rate
        offset = 0.0                            # where the open segment starts, seconds
        since_partial = 0.0
        words, texts = [], []
        odd = b""

        def decode_open(final: bool):
            if len(pending) < target // 10 or np.abs(pending).max() < 1e-4:
                return None
            x = normalise_loudness(pending, target) if np.abs(pending).max() > 1e-4 else pending
            return engine.transcribe(x, greedy_only=cfg.greedy or not final, offset=offset)

        async for msg in request_iterator:
            if msg.WhichOneof("message") != "pcm":
                await _refuse(context, "only one config message may be sent, first; then PCM")
            data = odd + msg.pcm
            odd = data[len(data) - len(data) % 2:] if len(data) % 2 else b""
            chunk = np.frombuffer(data[: len(data) - len(odd)], "<i2").astype(np.float32) / 32768.0
            if len(chunk) == 0:
                continue
            pending = np.concatenate([pending, resample(chunk, rate, target)])
            since_partial += len(chunk) / rate
            tail = pending[-int(0.6 * target):]
            paused = len(pending) > 2 * target and np.sqrt(np.mean(tail ** 2)) < 0.003
            if paused or len(pending) >= engine.window_seconds * target:
                t = await asyncio.to_thread(decode_open, True)
                if t is not None and t.text:
                    words += t.words
                    texts.append(t.text)
                    for s in t.segments:
                        yield audio_pb2.TranscribeEvent(segment=audio_pb2.Segment(start=s["start"], end=s["end"],
                                                                                  text=s["text"]))
                offset += len(pending) / target
                pending = np.zeros(0, np.float32)
                since_partial = 0.0
            elif since_partial >= self.partial_every_s:
                since_partial = 0.0
                t = await asyncio.to_thread(decode_open, False)
                if t is not None and t.text:
                    yield audio_pb2.TranscribeEvent(partial=t.text)
        t = await asyncio.to_thread(decode_open, True)
        if t is not None and t.text:
            words += t.words
            texts.append(t.text)
            for s in t.segments:
                yield audio_pb2.TranscribeEvent(segment=audio_pb2.Segment(start=s["start"], end=s["end"], text=s["text"]))
        duration = offset + len(pending) / target
        self.audio_seconds.labels(loaded.name, loaded.version, "in").inc(duration)
        whole = Transcript(text=" ".join(texts), words=words, segments=segments_of(words), duration=round(duration, 3))
        yield audio_pb2.TranscribeEvent(result=_response(whole, loaded, timestamps=cfg.timestamps))

    async def Synthesize(self, request, context):
        loaded = await self._model(request.model, context, "text-to-speech")
        engine = loaded.engine
        try:
            _, voice, _ = engine.check(request.text, request.voice, request.speed)
        except InvalidRequest as e:
            code = grpc.StatusCode.NOT_FOUND if e.status == 404 else grpc.StatusCode.INVALID_ARGUMENT
            await _refuse(context, str(e), e.status, code)
        gone = [False]
        chunks = engine.synthesize(request.text, request.voice, request.speed or 1.0, cancelled=lambda: gone[0])
        seconds = 0.0
        try:
            while True:
                try:
                    chunk = await asyncio.to_thread(next, chunks, _DONE)
                except InvalidRequest as e:
                    await _refuse(context, str(e), e.status)
                if chunk is _DONE:
                    break
                pcm = (np.clip(chunk.pcm, -1, 1) * 32767).astype("<i2").tobytes()
                seconds += len(chunk.pcm) / engine.sample_rate
                yield audio_pb2.SynthesizeChunk(pcm=pcm, sample_rate=engine.sample_rate, index=chunk.index,
                                                sentence=chunk.sentence, voice=voice["id"], model=loaded.name,
                                                model_version=loaded.version)
        finally:
            gone[0] = True
            self.audio_seconds.labels(loaded.name, loaded.version, "out").inc(seconds)

    async def ListVoices(self, request, context):
        voices = []
        for loaded in self.pool.models.values():
            if loaded.bundle.task != "text-to-speech":
                continue
            for v in loaded.engine.voices:
                voices.append(audio_pb2.Voice(id=v["id"], name=v.get("name", v["id"]), language=v.get("language", "en-US"),
                                              gender=v.get("gender", ""), sample_rate=int(v.get("sample_rate", 22_050)),
                                              model=loaded.name))
        return audio_pb2.ListVoicesResponse(voices=voices)

    async def ListModels(self, request, context):
        return list_models_reply(self.pool)
