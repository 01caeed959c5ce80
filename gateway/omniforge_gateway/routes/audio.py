"""Speech: POST /transcribe (audio file -> text with timestamps), POST /speech (text -> audio,
optionally streamed), GET /voices."""
from __future__ import annotations

import io
import shutil
import struct
import subprocess

import grpc
import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from omniforge_proto.v1 import audio_pb2, common_pb2

from ..deps import AudioDep, SettingsDep
from ..errors import ApiError
from ..schemas import SpeechRequest, TranscribeRequest, TranscribeResponse, VoicesResponse
from ..uploads import AUDIO_ACCEPTED, decode_base64, parse_body

router = APIRouter(tags=["audio"])
MAX_TEXT_CHARS = 20_000
CONTENT_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "pcm": "audio/L16"}


def _audio_doc(schema: str) -> dict:
    return {"requestBody": {"content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "file": {"type": "string", "format": "binary"}, "language": {"type": "string"},
            "timestamps": {"type": "boolean"}, "greedy": {"type": "boolean"}}}},
        "application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}},
    }}}


def audio_limit(request: Request) -> int:
    return int(request.app.state.settings.max_audio_mb * 2**20)


async def read_audio(request: Request, schema):
    body, upload = await parse_body(request, schema, limit=audio_limit(request), what="audio file",
                                    accepted=AUDIO_ACCEPTED)
    if (body.audio is None) == (upload is None):
        raise ApiError(422, "invalid_request", "send the audio as a multipart `file` or as base64 in `audio` "
                       "(exactly one of them)")
    audio = upload if upload is not None else decode_base64(body.audio, field="audio", limit=audio_limit(request))
    return body, audio


@router.post("/transcribe", response_model=TranscribeResponse, openapi_extra=_audio_doc("TranscribeRequest"))
async def transcribe(request: Request, audio_client: AudioDep, settings: SettingsDep) -> TranscribeResponse:
    """Speech -> text, with segments and (with `timestamps`) word start and end times in seconds."""
    body, audio = await read_audio(request, TranscribeRequest)
    try:
        reply = await audio_client.stub.Transcribe(audio_pb2.TranscribeRequest(
            model=common_pb2.ModelRef(name=body.model or ""), audio=audio, language=body.language or "",
            timestamps=body.timestamps, greedy=body.greedy), timeout=settings.request_timeout_s,
            metadata=audio_client.metadata())
    except grpc.aio.AioRpcError as e:
        raise audio_client.error(e) from None
    return TranscribeResponse(
        text=reply.text, duration=round(reply.duration, 3), model=reply.model, model_version=reply.model_version,
        language=reply.language or "en",
        segments=[{"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text} for s in reply.segments],
        words=[{"start": round(w.start, 3), "end": round(w.end, 3), "word": w.word} for w in reply.words])


def wav_header(rate: int, n_bytes: int | None) -> bytes:
    """A 16-bit mono WAV header; n_bytes None = unknown length (streaming: the sizes say 'to the end')."""
    data = 0xFFFFFFFF if n_bytes is None else n_bytes
    riff = 0xFFFFFFFF if n_bytes is None else 36 + n_bytes
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            + b"data" + struct.pack("<I", data))


def encode(pcm: bytes, rate: int, fmt: str) -> bytes:
    if fmt == "pcm":
        return pcm
    if fmt == "wav":
        return wav_header(rate, len(pcm)) + pcm
    samples = np.frombuffer(pcm, "<i2")
    if fmt == "flac":
        import soundfile as sf

        buf = io.BytesIO()
        sf.write(buf, samples, rate, format="FLAC", subtype="PCM_16")
        return buf.getvalue()
    return ffmpeg_encode(pcm, rate, ["-f", "mp3", "-b:a", "64k"])


def ffmpeg_encode(pcm: bytes, rate: int, args: list[str]) -> bytes:
    """16-bit mono PCM -> what ffmpeg's output `args` ask for (mp3, ogg/opus, adts/aac)."""
    out = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "s16le", "-ar", str(rate), "-ac", "1",
                          "-i", "pipe:0", *args, "pipe:1"], input=pcm, capture_output=True, timeout=120)
    if out.returncode != 0:
        raise ApiError(500, "internal_error", "audio encoding failed; ask for wav, flac or pcm")
    return out.stdout


@router.post("/speech", responses={200: {"content": {t: {} for t in CONTENT_TYPES.values()}}})
async def speech(body: SpeechRequest, audio_client: AudioDep, settings: SettingsDep):
    """Text -> speech in `voice` at `speed`; `stream: true` sends the audio as it is made (wav or pcm)."""
    if len(body.text) > MAX_TEXT_CHARS:
        raise ApiError(413, "payload_too_large", f"text is {len(body.text):,} characters; at most {MAX_TEXT_CHARS:,} "
                       "per request: send it in parts")
    if body.format == "mp3" and shutil.which("ffmpeg") is None:
        raise ApiError(415, "unsupported_media_type", "mp3 needs ffmpeg, which this gateway does not have; "
                       "ask for wav, flac or pcm")
    if body.stream and body.format not in ("wav", "pcm"):
        raise ApiError(422, "invalid_request", f"format {body.format!r} cannot be streamed; stream wav or pcm, "
                       "or send stream: false")
    call = audio_client.stub.Synthesize(audio_pb2.SynthesizeRequest(
        model=common_pb2.ModelRef(name=body.model or ""), text=body.text, voice=body.voice or "", speed=body.speed),
        timeout=settings.request_timeout_s, metadata=audio_client.metadata())
    chunks = call.__aiter__()
    try:
        first = await chunks.__anext__()          # errors (bad text, unknown voice) surface here, before any byte
    except StopAsyncIteration:
        raise ApiError(500, "internal_error", "the audio service produced no audio") from None
    except grpc.aio.AioRpcError as e:
        raise audio_client.error(e) from None
    rate = first.sample_rate
    headers = {"X-Sample-Rate": str(rate), "X-Voice": first.voice, "X-Model": first.model,
               "X-Model-Version": first.model_version}
    media = CONTENT_TYPES[body.format] + (f";rate={rate}" if body.format == "pcm" else "")
    if body.stream:
        async def stream():
            if body.format == "wav":
                yield wav_header(rate, None)
            yield first.pcm
            try:
                async for chunk in chunks:
                    yield chunk.pcm
            except grpc.aio.AioRpcError:
                return                          # the client sees a short stream; the service logged why
        return StreamingResponse(stream(), media_type=media, headers=headers)
    parts = [first.pcm]
    try:
        async for chunk in chunks:
            parts.append(chunk.pcm)
    except grpc.aio.AioRpcError as e:
        raise audio_client.error(e) from None
    pcm = b"".join(parts)
    headers["X-Audio-Seconds"] = f"{len(pcm) / 2 / rate:.3f}"
    return Response(encode(pcm, rate, body.format), media_type=media, headers=headers)


@router.get("/voices", response_model=VoicesResponse)
async def voices(audio_client: AudioDep, settings: SettingsDep) -> VoicesResponse:
    """The voices `/speech` speaks in."""
    try:
        reply = await audio_client.stub.ListVoices(audio_pb2.ListVoicesRequest(), timeout=settings.health_timeout_s * 5,
                                                   metadata=audio_client.metadata())
    except grpc.aio.AioRpcError as e:
        raise audio_client.error(e) from None
    return VoicesResponse(voices=[{"id": v.id, "name": v.name, "language": v.language, "gender": v.gender,
                                   "sample_rate": v.sample_rate, "model": v.model} for v in reply.voices])
