"""OpenAI-compatible media routes: POST /v1/embeddings, /v1/images/generations,
/v1/audio/speech and /v1/audio/transcriptions, translated to the fusion, image and audio services."""
from __future__ import annotations

import base64
import shutil

import grpc
import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from omniforge_proto.v1 import audio_pb2, common_pb2, fusion_pb2
from omniforge_shared.audio import resample

from ..deps import AudioDep, FusionDep, SettingsDep
from ..errors import ApiError
from ..openai_protocol import EmbeddingsRequest, SpeechCreate
from ..uploads import AUDIO_ACCEPTED, read_upload
from .audio import audio_limit, encode, ffmpeg_encode
from .images import generate_images
from .search import _call

router = APIRouter(prefix="/v1", tags=["openai"])
# the same handler as /images/generations, whose request and response are OpenAI's already
router.add_api_route("/images/generations", generate_images, methods=["POST"])

PCM_RATE = 24_000                          # OpenAI's pcm: headerless 16-bit mono at 24 kHz
SPEECH_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac",
                "wav": "audio/wav", "pcm": "audio/pcm"}
FFMPEG_FORMATS = {"opus": ["-f", "ogg", "-c:a", "libopus", "-b:a", "48k"], "aac": ["-f", "adts", "-c:a", "aac", "-b:a", "64k"]}
TRANSCRIPT_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")


@router.post("/embeddings")
async def embeddings(body: EmbeddingsRequest, fusion: FusionDep, settings: SettingsDep):
    texts = body.input if isinstance(body.input, list) else [body.input]
    reply = await _call(fusion, fusion.stub.Embed, fusion_pb2.EmbedRequest(
        model=common_pb2.ModelRef(name=body.model), inputs=[fusion_pb2.EmbedInput(text=t) for t in texts]), settings)
    if body.dimensions is not None and body.dimensions != reply.dimensions:
        raise ApiError(400, "invalid_request", f"dimensions={body.dimensions}: {reply.model} embeds into "
                       f"{reply.dimensions} dimensions; send {reply.dimensions} or leave it unset", param="dimensions")
    if body.encoding_format == "base64":       # little-endian float32, what OpenAI's client decodes
        vectors = [base64.b64encode(np.asarray(e.values, "<f4").tobytes()).decode() for e in reply.embeddings]
    else:
        vectors = [list(e.values) for e in reply.embeddings]
    # the fusion service does not count tokens: usage counts the texts' words
    words = sum(len(t.split()) for t in texts)
    return JSONResponse({"object": "list", "model": reply.model,
                         "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
                         "usage": {"prompt_tokens": words, "total_tokens": words}})


def _to_pcm24k(pcm: bytes, rate: int) -> bytes:
    x = resample(np.frombuffer(pcm, "<i2").astype(np.float32) / 32768, rate, PCM_RATE)
    return (np.clip(x, -1, 1) * 32767).round().astype("<i2").tobytes()


@router.post("/audio/speech")
async def speech(body: SpeechCreate, audio: AudioDep, settings: SettingsDep):
    fmt = body.response_format
    if fmt in ("mp3", *FFMPEG_FORMATS) and shutil.which("ffmpeg") is None:
        raise ApiError(400, "unsupported_format", f"response_format {fmt!r} needs ffmpeg, which this gateway does "
                       "not have; ask for wav, flac or pcm", param="response_format")
    call = audio.stub.Synthesize(audio_pb2.SynthesizeRequest(
        model=common_pb2.ModelRef(name=body.model), text=body.input, voice=body.voice, speed=body.speed),
        timeout=settings.request_timeout_s, metadata=audio.metadata())
    parts, rate = [], 0
    try:
        async for chunk in call:
            parts.append(chunk.pcm)
            rate = chunk.sample_rate
    except grpc.aio.AioRpcError as e:
        raise audio.error(e) from None
    pcm = b"".join(parts)
    if fmt == "pcm":
        data = _to_pcm24k(pcm, rate)
    elif fmt in FFMPEG_FORMATS:
        data = ffmpeg_encode(pcm, rate, FFMPEG_FORMATS[fmt])
    else:
        data = encode(pcm, rate, fmt)
    return Response(data, media_type=SPEECH_TYPES[fmt])


def _timestamp(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def subtitles(segments, fmt: str) -> str:
    """SubRip (srt) or WebVTT (vtt) cues, one per segment."""
    sep = "," if fmt == "srt" else "."
    cues = []
    for i, s in enumerate(segments, 1):
        times = f"{_timestamp(s.start, sep)} --> {_timestamp(s.end, sep)}"
        cues.append(f"{i}\n{times}\n{s.text.strip()}\n" if fmt == "srt" else f"{times}\n{s.text.strip()}\n")
    return ("WEBVTT\n\n" if fmt == "vtt" else "") + "\n".join(cues)


@router.post("/audio/transcriptions")
async def transcriptions(request: Request, audio: AudioDep, settings: SettingsDep):
    """Multipart: `file`, `model`, `response_format` (json, text, srt, verbose_json, vtt), `language`,
    `prompt`, `temperature`, `timestamp_granularities[]` (segment, word; with verbose_json)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(415, "invalid_request", "send a multipart form with the audio as `file` and a `model`")
    form = await request.form(max_files=1, max_fields=32)
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "invalid_request", f"no `file` in the form; send the audio ({AUDIO_ACCEPTED}) as "
                           "a file part named `file`", param="file")
        data = await read_upload(upload, limit=audio_limit(request), what="audio file", accepted=AUDIO_ACCEPTED)
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        granularities = form.getlist("timestamp_granularities[]") or form.getlist("timestamp_granularities")
    finally:
        await form.close()
    fmt = fields.get("response_format", "json")
    if fmt not in TRANSCRIPT_FORMATS:
        raise ApiError(400, "invalid_request", f"response_format {fmt!r} is not one of {', '.join(TRANSCRIPT_FORMATS)}",
                       param="response_format")
    unknown = set(granularities) - {"segment", "word"}
    if unknown or (granularities and fmt != "verbose_json"):
        raise ApiError(400, "invalid_request", "timestamp_granularities[] takes segment and word, with "
                       "response_format verbose_json", param="timestamp_granularities")
    words = "word" in granularities
    try:
        reply = await audio.stub.Transcribe(audio_pb2.TranscribeRequest(
            model=common_pb2.ModelRef(name=fields.get("model", "")), audio=data, language=fields.get("language", ""),
            timestamps=words), timeout=settings.request_timeout_s, metadata=audio.metadata())
    except grpc.aio.AioRpcError as e:
        raise audio.error(e) from None
    if fmt == "text":
        return PlainTextResponse(reply.text + "\n")
    if fmt in ("srt", "vtt"):
        return PlainTextResponse(subtitles(reply.segments, fmt), media_type="text/plain")
    if fmt == "json":
        return JSONResponse({"text": reply.text})
    out = {"task": "transcribe", "language": reply.language or "en", "duration": round(reply.duration, 3),
           "text": reply.text,
           # Whisper's per-segment statistics (avg_logprob, no_speech_prob, ...) are not computed here: left out
           "segments": [{"id": i, "start": round(s.start, 3), "end": round(s.end, 3), "text": s.text}
                        for i, s in enumerate(reply.segments)]}
    if words:
        out["words"] = [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)} for w in reply.words]
    return JSONResponse(out)
