"""GET /models: what every configured model service serves."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from ..deps import SettingsDep
from ..schemas import ModelList, ModelPublic

router = APIRouter(tags=["models"])


@router.get("/models", response_model=ModelList)
async def list_models(request: Request, settings: SettingsDep) -> ModelList:
    clients = list(request.app.state.services.values())
    replies = await asyncio.gather(*(c.list_models(timeout=settings.health_timeout_s * 5) for c in clients))
    return ModelList(models=[
        ModelPublic(name=m.name, version=m.version, task=m.task, backend=m.backend, service=c.label,
                    context_length=m.context_length, vocab_size=m.vocab_size, metrics=dict(m.metrics))
        for c, infos in zip(clients, replies) for m in infos])
