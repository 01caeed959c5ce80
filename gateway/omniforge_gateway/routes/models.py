"""GET /models: what every model service serves."""
from __future__ import annotations

import grpc
from fastapi import APIRouter

from ..deps import SettingsDep, TextDep
from ..errors import from_grpc
from ..schemas import ModelList, ModelPublic

router = APIRouter(tags=["models"])


@router.get("/models", response_model=ModelList)
async def list_models(text: TextDep, settings: SettingsDep) -> ModelList:
    try:
        infos = await text.list_models(timeout=settings.health_timeout_s * 5)
    except grpc.aio.AioRpcError as e:
        raise from_grpc(e, service=text.label, retry_after_s=settings.retry_after_s) from None
    return ModelList(models=[
        ModelPublic(name=m.name, version=m.version, task=m.task, backend=m.backend, service=text.label,
                    context_length=m.context_length, vocab_size=m.vocab_size, metrics=dict(m.metrics))
        for m in infos])
