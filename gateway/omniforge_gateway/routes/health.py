"""Liveness (/healthz), readiness (/readyz: each configured service's gRPC health) and /metrics."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ..deps import MetricsDep, SettingsDep

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def healthz(settings: SettingsDep) -> dict:
    """Alive; says whether API keys are required (they are off only in a local run)."""
    if settings.auth:
        return {"status": "ok", "auth": "on"}
    return {"status": "ok", "auth": "off",
            "warning": "API keys are OFF: every route is open to whoever reaches this gateway (a local run); "
                       "set OMNIFORGE_GATEWAY_AUTH=on and create keys with `omniforge keys create`"}


@router.get("/readyz")
async def readyz(request: Request, settings: SettingsDep):
    """200 when every configured service says SERVING; lists each with its address and status."""
    clients = list(request.app.state.services.values())
    statuses = await asyncio.gather(*(c.check(settings.health_timeout_s) for c in clients))
    services = {c.label: {"address": c.address, "status": s} for c, s in zip(clients, statuses)}
    not_configured = [label for label, address in settings.addresses().items() if not address]
    ready = all(s == "SERVING" for s in statuses)
    headers = {} if ready else {"Retry-After": str(settings.retry_after_s)}
    return JSONResponse({"ready": ready, "services": services, "not_configured": not_configured},
                        status_code=200 if ready else 503, headers=headers)


@router.get("/metrics")
async def metrics(metrics: MetricsDep) -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
