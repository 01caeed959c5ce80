"""/datasets: upload a file (text, JSONL or Parquet) to be built into a registered dataset,
and list the registered ones. Building runs on a training worker as a `dataset-build` job."""
from __future__ import annotations

import asyncio
import shutil
import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from pydantic import BaseModel, ValidationError

from omniforge_shared.jobs.specs import DATASET_BUILD, DatasetBuildParams

from ..errors import ApiError
from .training import JobPublic, enqueue_job

router = APIRouter(tags=["datasets"])
FORMATS = {".txt": "text", ".jsonl": "jsonl", ".parquet": "parquet"}
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
CHUNK = 1 << 20


class DatasetPublic(BaseModel):
    name: str
    version: str
    format: str
    counts: dict
    content_hash: str
    created_at: datetime


class DatasetUpload(BaseModel):
    name: str
    file: str
    bytes: int
    job: JobPublic


@router.get("/datasets", response_model=list[DatasetPublic])
async def list_datasets(request: Request) -> list[DatasetPublic]:
    return [DatasetPublic(name=d.name, version=d.version, format=d.format, counts=d.counts or {},
                          content_hash=d.content_hash, created_at=d.created_at)
            for d in request.app.state.registry.list_datasets()]


@router.post("/datasets", status_code=202, response_model=DatasetUpload)
async def upload_dataset(request: Request,
                         file: Annotated[UploadFile, File(description="a .txt, .jsonl or .parquet file")],
                         name: Annotated[str, Form(pattern=NAME_PATTERN, description="the dataset's name")],
                         tokenizer: Annotated[Literal["bpe", "char"], Form()] = "bpe",
                         vocab_size: Annotated[int, Form()] = 4096,
                         val_fraction: Annotated[float, Form()] = 0.05,
                         language: Annotated[str, Form(description="'' keeps every language")] = "en",
                         text_field: Annotated[str, Form()] = "text") -> DatasetUpload:
    """Stores the upload under the data root and queues the job that builds and registers it;
    follow it at /training/jobs/{job.id}. The dataset is listed by GET /datasets once built."""
    settings = request.app.state.settings
    suffix = "." + (file.filename or "").rsplit(".", 1)[-1].lower() if "." in (file.filename or "") else ""
    if suffix not in FORMATS:
        raise ApiError(415, "unsupported_media_type", f"file {file.filename!r} is not a dataset file; send "
                       f"one ending in {', '.join(FORMATS)}")
    try:
        params = DatasetBuildParams(tokenizer=tokenizer, vocab_size=vocab_size, val_fraction=val_fraction,
                                    language=language or None, text_field=text_field)
    except ValidationError as e:
        raise ApiError(422, "invalid_request", "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
                                                          for err in e.errors())) from None
    data_root = request.app.state.data_root
    folder = data_root / "uploads" / name / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"upload{suffix}"
    try:
        size = await _save(file, target, limit=int(settings.max_upload_mb * 2**20))
        # read in a thread: a large upload must not hold up the gateway's other requests
        await asyncio.to_thread(_check_content, target, FORMATS[suffix])
    except BaseException:                 # refused, or the client went away mid-upload: keep nothing
        shutil.rmtree(folder, ignore_errors=True)
        raise
    relative = str(target.relative_to(data_root))
    job = enqueue_job(request, recipe=DATASET_BUILD, dataset=relative, model_name=name,
                      params=params.model_dump(), queue="cpu", max_steps=0)
    return DatasetUpload(name=name, file=relative, bytes=size, job=job)


async def _save(file: UploadFile, target, *, limit: int) -> int:
    """Copies the upload to `target` in chunks; refuses it past `limit` bytes."""
    size = 0
    with open(target, "wb") as out:
        while chunk := await file.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "payload_too_large", f"the upload is over {limit / 2**20:.0f} MB; send a "
                               "smaller file or raise OMNIFORGE_GATEWAY_MAX_UPLOAD_MB")
            out.write(chunk)
    if size == 0:
        raise ApiError(400, "invalid_request", "the uploaded file is empty; send a file with text in it")
    return size


def _check_content(path, kind: str) -> None:
    """What can be told at once: text must be UTF-8, JSONL lines JSON objects, Parquet a Parquet file."""
    if kind == "parquet":
        with open(path, "rb") as f:
            if f.read(4) != b"PAR1":
                raise ApiError(400, "invalid_request", "the file is not a Parquet file (no PAR1 header)")
        return
    import json

    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ApiError(400, "invalid_request", f"line {number} is not UTF-8 ({e.reason} at byte "
                               f"{e.start}); send the file encoded as UTF-8") from None
            if kind == "jsonl" and line.strip():
                try:
                    row = json.loads(line)
                except ValueError as e:
                    raise ApiError(400, "invalid_request", f"line {number} is not JSON ({e}); send one JSON "
                                   "object a line") from None
                if not isinstance(row, dict):
                    raise ApiError(400, "invalid_request", f"line {number} is not a JSON object; send one "
                                   "object a line, with the text under text_field")
