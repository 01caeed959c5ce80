"""Logging for every process: human-readable by default, one JSON object a line with
OMNIFORGE_LOG_FORMAT=json. Each record carries its component and the request id of the call
it belongs to (`request_id`, set by the gateway's middleware and the services' interceptor).
"""
from __future__ import annotations

import json
import logging
import os
import sys
from contextvars import ContextVar
from datetime import datetime, timezone

request_id: ContextVar[str] = ContextVar("request_id", default="")
FORMATS = ("text", "json")


class _Context(logging.Filter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def filter(self, record: logging.LogRecord) -> bool:
        record.component = self.component
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                "level": record.levelname.lower(), "component": record.component,
                "request_id": record.request_id or None, "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(component)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"{text} [request {record.request_id}]" if record.request_id else text


def setup_logging(component: str, *, level: int = logging.INFO) -> None:
    """Root logging for a process; `component` is gateway, text, worker, ..."""
    fmt = os.environ.get("OMNIFORGE_LOG_FORMAT", "text").lower()
    if fmt not in FORMATS:
        from .settings import ConfigError

        raise ConfigError(f"invalid configuration:\n  OMNIFORGE_LOG_FORMAT={fmt!r}: use one of {list(FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Context(component))
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
