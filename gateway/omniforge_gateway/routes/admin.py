"""/admin/keys: create, list and revoke API keys (the `admin` scope)."""
from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from omniforge_shared.keys import SCOPES, InvalidKeyRequest, KeyView

from ..errors import ApiError
from ..schemas import RequestModel

router = APIRouter(prefix="/admin", tags=["admin"])


class KeyCreate(RequestModel):
    name: str = Field(min_length=1, max_length=128, description="who or what uses the key")
    scopes: list[str] = Field(default_factory=lambda: ["inference"], description=f"some of {list(SCOPES)}")
    rate_limit_per_minute: int | None = Field(None, ge=1, description="default: the gateway's")
    quota_per_day: int | None = Field(None, ge=1, description="requests a day; default: the gateway's")


class KeyPublic(BaseModel):
    id: str
    name: str
    scopes: list[str]
    rate_limit_per_minute: int | None
    quota_per_day: int | None
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, v: KeyView) -> "KeyPublic":
        return cls(**{**dataclasses.asdict(v), "scopes": list(v.scopes)})


class KeyCreated(KeyPublic):
    key: str = Field(description="the secret: shown this once, store it now")


@router.post("/keys", status_code=201, response_model=KeyCreated)
async def create_key(body: KeyCreate, request: Request) -> KeyCreated:
    try:
        view, key = await asyncio.to_thread(request.app.state.keys.create, name=body.name, scopes=body.scopes,
                                            rate_limit_per_minute=body.rate_limit_per_minute,
                                            quota_per_day=body.quota_per_day)
    except InvalidKeyRequest as e:
        raise ApiError(422, "invalid_request", str(e)) from None
    return KeyCreated(**KeyPublic.of(view).model_dump(), key=key)


@router.get("/keys", response_model=list[KeyPublic])
async def list_keys(request: Request, include_revoked: bool = False) -> list[KeyPublic]:
    views = await asyncio.to_thread(request.app.state.keys.list, include_revoked=include_revoked)
    return [KeyPublic.of(v) for v in views]


@router.delete("/keys/{key_id}", response_model=KeyPublic)
async def revoke_key(key_id: str, request: Request) -> KeyPublic:
    try:
        return KeyPublic.of(await asyncio.to_thread(request.app.state.keys.revoke, key_id))
    except InvalidKeyRequest as e:
        raise ApiError(404, "not_found", str(e)) from None
