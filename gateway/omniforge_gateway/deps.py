"""Dependencies, declared once: handlers take them as `Annotated` aliases.

They are `async def` on purpose: FastAPI runs a plain `def` dependency in its thread pool, a
thread hop per dependency per request for what is an attribute read."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from .clients import AudioClient, FusionClient, ImageClient, TextClient, not_configured
from .metrics import GatewayMetrics
from .settings import GatewaySettings


async def _settings(request: Request) -> GatewaySettings:
    return request.app.state.settings


def service(label: str):
    """The client of a configured service; a route whose service is not configured answers 503."""
    async def dependency(request: Request):
        client = request.app.state.services.get(label)
        if client is None:
            raise not_configured(label)
        return client
    return dependency


async def _metrics(request: Request) -> GatewayMetrics:
    return request.app.state.metrics


SettingsDep = Annotated[GatewaySettings, Depends(_settings)]
TextDep = Annotated[TextClient, Depends(service("text"))]
MetricsDep = Annotated[GatewayMetrics, Depends(_metrics)]
FusionDep = Annotated[FusionClient, Depends(service("fusion"))]
ImageDep = Annotated[ImageClient, Depends(service("image"))]
AudioDep = Annotated[AudioClient, Depends(service("audio"))]
