"""Images sent to the gateway: a multipart `file`, or base64 in a JSON body.

The gateway checks only what it can without decoding (size, base64); the model service decodes
with `omniforge_shared.images`, the one decoder untrusted image bytes reach, and a bad image
comes back as a 400 naming what is accepted.
"""
from __future__ import annotations

import base64
import binascii
import re

from fastapi import Request
from pydantic import BaseModel, ValidationError

from omniforge_shared.images import ACCEPTED

from .errors import ApiError, _describe

_DATA_URL = re.compile(r"^data:[\w/+.-]*(;[\w=-]+)*;base64,", re.I)
CHUNK = 1 << 20


def limit_bytes(request: Request) -> int:
    return int(request.app.state.settings.max_image_mb * 2**20)


def too_large(size: int, limit: int, what: str = "image", accepted: str = ACCEPTED) -> ApiError:
    return ApiError(413, "payload_too_large", f"the {what} is over {limit / 2**20:.0f} MB ({size:,} bytes or more); "
                    f"send a smaller {what} ({accepted})")


AUDIO_ACCEPTED = "WAV, FLAC or OGG; MP3, M4A or WebM where ffmpeg is installed"


def decode_base64(value: str, *, field: str, limit: int) -> bytes:
    """Strict base64 (RFC 4648, standard or URL-safe alphabet), optionally as a data: URL."""
    audio = field.split(".")[-1].startswith("audio")
    what, accepted, kind = ("audio file", AUDIO_ACCEPTED, "audio") if audio else ("image", ACCEPTED, "image")
    value = _DATA_URL.sub("", value.strip(), count=1)
    if len(value) * 3 // 4 > limit:
        raise too_large(len(value) * 3 // 4, limit, what, accepted)
    compact = re.sub(r"\s+", "", value)
    try:
        if "-" in compact or "_" in compact:
            data = base64.b64decode(compact.translate(str.maketrans("-_", "+/")), validate=True)
        else:
            data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "invalid_request", f"{field} is not valid base64; send the {what}'s bytes "
                       f"base64-encoded (RFC 4648), optionally as a data:{kind}/...;base64, URL") from None
    if not data:
        raise ApiError(400, "invalid_request", f"{field} is empty (0 bytes); send {_a(what)} ({accepted})")
    return data


async def read_upload(file, *, limit: int, what: str = "image", accepted: str = ACCEPTED) -> bytes:
    data = bytearray()
    while chunk := await file.read(CHUNK):
        data += chunk
        if len(data) > limit:
            raise too_large(len(data), limit, what, accepted)
    if not data:
        raise ApiError(400, "invalid_request", f"the uploaded file is empty (0 bytes); send {_a(what)} ({accepted})")
    return bytes(data)


_AUDIO_BRANDS = (b"M4A ", b"M4B ", b"mp41", b"mp42", b"isom", b"dash", b"iso5", b"iso6")


def is_audio(data: bytes) -> bool:
    """Whether an upload's first bytes are an audio container (WAV, FLAC, OGG, MP3, M4A, WebM):
    how a multipart `file` that may be an image or a spoken query is told apart."""
    head = data[:16]
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return True
    if head[:4] in (b"fLaC", b"OggS", b"\x1aE\xdf\xa3") or head[:3] == b"ID3":
        return True
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:     # an MPEG audio frame (JPEG is FF D8)
        return True
    return head[4:8] == b"ftyp" and head[8:12] in _AUDIO_BRANDS


def _a(what: str) -> str:
    return ("an " if what[0] in "aeiou" else "a ") + what


async def parse_body(request: Request, schema: type[BaseModel], *, limit: int | None = None, what: str = "image",
                     accepted: str = ACCEPTED) -> tuple[BaseModel, bytes | None]:
    """JSON body -> (schema, None); multipart -> (schema of its other fields, the file's bytes)."""
    content_type = request.headers.get("content-type", "")
    limit = limit or limit_bytes(request)
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=32)
        try:
            upload = form.get("file")
            fields = {k: v for k, v in form.items() if k != "file" and isinstance(v, str)}
            image = await read_upload(upload, limit=limit, what=what, accepted=accepted) if upload is not None and not isinstance(upload, str) else None
        finally:
            await form.close()
        try:
            return schema.model_validate(_coerce(schema, fields)), image
        except ValidationError as e:
            raise ApiError(422, "invalid_request", _describe(e.errors())) from None
    declared = int(request.headers.get("content-length") or 0)
    if declared > limit * 4 // 3 + 65536:
        raise too_large(declared, limit, what, accepted)
    body = await request.body()
    if not body:
        raise ApiError(400, "invalid_request", "the request has no body; send JSON (application/json) or a "
                       "multipart form with a `file`")
    try:
        return schema.model_validate_json(body), None
    except ValidationError as e:
        errors = e.errors()
        status = 400 if any(x["type"] in ("json_invalid", "invalid_unicode", "model_type") for x in errors) else 422
        raise ApiError(status, "invalid_request", _describe(errors)) from None


def _coerce(schema: type[BaseModel], fields: dict[str, str]) -> dict:
    """Form fields are strings: read numbers and booleans as JSON where the schema wants them."""
    import json
    from typing import get_args

    out = {}
    for k, v in fields.items():
        info = schema.model_fields.get(k)
        types = {info.annotation, *get_args(info.annotation)} if info else set()
        if types & {int, float, bool} and str not in types:
            try:
                v = json.loads(v)
            except ValueError:
                pass
        out[k] = v
    return out
