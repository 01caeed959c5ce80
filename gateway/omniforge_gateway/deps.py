"""Dependencies, declared once: handlers take them as `Annotated` aliases."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from .clients import TextClient
from .metrics import GatewayMetrics
from .settings import GatewaySettings


def _settings(request: Request) -> GatewaySettings:
    return request.app.state.settings


def _text(request: Request) -> TextClient:
    return request.app.state.text


def _metrics(request: Request) -> GatewayMetrics:
    return request.app.state.metrics


SettingsDep = Annotated[GatewaySettings, Depends(_settings)]
TextDep = Annotated[TextClient, Depends(_text)]
MetricsDep = Annotated[GatewayMetrics, Depends(_metrics)]
