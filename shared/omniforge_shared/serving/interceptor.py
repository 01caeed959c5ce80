"""A server interceptor for every omniforge service: it takes the request id from the call's
metadata (`x-request-id`, sent by the gateway) or makes one, so every log line of the call
carries it, and counts each call and its latency under its method, model, version and status.
A servicer names the model it served with `label_call(model=..., version=...)`."""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from contextvars import ContextVar

import grpc

from omniforge_shared.logs import request_id
from omniforge_shared.metrics import Metrics

logger = logging.getLogger("omniforge.access")
REQUEST_ID_KEY = "x-request-id"
_labels: ContextVar[dict | None] = ContextVar("call_labels", default=None)


def label_call(*, model: str, version: str) -> None:
    labels = _labels.get()
    if labels is not None:
        labels.update(model=model, version=version)


class RequestInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: Metrics, *, prefix: str = "/omniforge.") -> None:
        self.prefix = prefix
        labels = ["route", "model", "version", "status"]
        self.requests = metrics.counter("requests_total", "gRPC calls", labels)
        self.latency = metrics.histogram("request_duration_seconds", "gRPC call duration", labels[:3])

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or not details.method.startswith(self.prefix):
            return handler                      # health checks and reflection are not counted
        rid = dict(details.invocation_metadata or ()).get(REQUEST_ID_KEY) or uuid.uuid4().hex
        route = details.method.rsplit("/", 1)[-1]
        if handler.unary_unary or handler.stream_unary:
            return _rebuild(handler, self._unary(handler.unary_unary or handler.stream_unary, route, rid))
        return _rebuild(handler, self._streaming(handler.unary_stream or handler.stream_stream, route, rid))

    def _unary(self, behavior, route: str, rid: str):
        async def call(request, context):
            start = self._begin(rid)
            status = "OK"
            try:
                return await behavior(request, context)
            except BaseException as e:
                status = _status(e, context)
                raise
            finally:
                self._end(route, status, start)
        return call

    def _streaming(self, behavior, route: str, rid: str):
        async def call(request, context):
            start = self._begin(rid)
            status = "OK"
            try:
                async for item in behavior(request, context):
                    yield item
            except BaseException as e:
                status = _status(e, context)
                raise
            finally:
                self._end(route, status, start)
        return call

    def _begin(self, rid: str):
        # each call runs in a task of its own, so what is set here stays with the call
        request_id.set(rid)
        _labels.set({"model": "", "version": ""})
        return time.perf_counter()

    def _end(self, route: str, status: str, start: float) -> None:
        elapsed = time.perf_counter() - start
        labels = _labels.get() or {}
        model, version = labels.get("model", ""), labels.get("version", "")
        self.requests.labels(route, model, version, status).inc()
        self.latency.labels(route, model, version).observe(elapsed)
        logger.info("%s %s:%s %s %.1f ms", route, model, version, status, elapsed * 1e3)


def _status(e: BaseException, context) -> str:
    if isinstance(e, asyncio.CancelledError):
        return "CANCELLED"
    code = context.code() if hasattr(context, "code") else None
    if isinstance(code, grpc.StatusCode):
        return code.name
    return "UNKNOWN"


def _rebuild(handler, behavior):
    kind = ("unary_unary" if handler.unary_unary else "stream_unary" if handler.stream_unary
            else "unary_stream" if handler.unary_stream else "stream_stream")
    make = getattr(grpc, f"{kind}_rpc_method_handler")
    return make(behavior, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
