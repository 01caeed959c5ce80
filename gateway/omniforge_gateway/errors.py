"""Errors as JSON `{"error": {"message", "type", "param", "code"}}` (OpenAI's shape, so its
clients raise the right exception), and the one gRPC-status -> HTTP mapping."""
from __future__ import annotations

import logging

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("omniforge.gateway")

# gRPC status -> (HTTP status, error code)
GRPC_TO_HTTP: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request"),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "invalid_request"),
    grpc.StatusCode.NOT_FOUND: (404, "model_not_found"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "conflict"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_denied"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "unauthenticated"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limited"),
    grpc.StatusCode.CANCELLED: (499, "cancelled"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout"),
    grpc.StatusCode.UNAVAILABLE: (503, "service_unavailable"),
    grpc.StatusCode.UNIMPLEMENTED: (501, "not_implemented"),
}


def error_type(status: int) -> str:
    """OpenAI's error `type` for an HTTP status."""
    return {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
            404: "not_found_error", 409: "conflict_error", 413: "invalid_request_error",
            415: "invalid_request_error", 422: "invalid_request_error",
            429: "rate_limit_error"}.get(status, "server_error" if status >= 500 else "invalid_request_error")


def error_body(status: int, code: str, message: str, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers, self.param = status, code, message, headers or {}, param

    def body(self) -> dict:
        return error_body(self.status, self.code, self.message, self.param)


def from_grpc(err: grpc.aio.AioRpcError, *, service: str, retry_after_s: int) -> ApiError:
    status, code = GRPC_TO_HTTP.get(err.code(), (502, "upstream_error"))
    message = err.details() or err.code().name
    # a service may name the HTTP status that fits better (413 too long, 415 unsupported media, 422 out of range)
    wanted = dict(err.trailing_metadata() or ()).get("http-status", "")
    if wanted.isdigit() and 400 <= int(wanted) < 500:
        status = int(wanted)
        code = {413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_request",
                404: "not_found"}.get(status, "invalid_request")
    headers = {}
    if status == 503:
        message = f"the {service} service is unavailable ({message}); retry shortly"
        headers["Retry-After"] = str(retry_after_s)
    return ApiError(status, code, message, headers)


def error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def _describe(errors) -> str:
    parts = []
    for e in errors:
        if e["type"] == "json_invalid":
            return f"request body is not valid JSON ({e.get('ctx', {}).get('error', 'parse error')}); send a JSON object"
        loc = ".".join(str(x) for x in e["loc"] if x != "body") or "body"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


def _param(errors) -> str | None:
    """The request field the first error is about (OpenAI's `param`), if it names one."""
    loc = [str(x) for x in errors[0]["loc"] if x != "body"] if errors else []
    return ".".join(loc) or None


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        unicode = [e for e in errors if e["type"] == "invalid_unicode"]
        if unicode:
            return JSONResponse(error_body(400, "invalid_request", unicode[0]["msg"]), status_code=400)
        malformed = any(e["type"] in ("json_invalid", "model_attributes_type") and e["loc"][:1] == ("body",)
                        and len(e["loc"]) <= 2 for e in errors)
        status = 400 if malformed else 422
        content_type = request.headers.get("content-type", "")
        if malformed and "json" not in content_type:
            return JSONResponse(error_body(415, "invalid_request",
                                           f"request body must be JSON with Content-Type: application/json "
                                           f"(got {content_type or 'no content type'})"), status_code=415)
        return JSONResponse(error_body(status, "invalid_request", _describe(errors), _param(errors)),
                            status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        message = str(exc.detail)
        if exc.status_code == 400 and "parsing the body" in message:
            # FastAPI's words for a body that is not UTF-8
            message = "request body could not be decoded; send a JSON object encoded as UTF-8"
            return JSONResponse(error_body(400, "invalid_request", message), status_code=400)
        return JSONResponse(error_body(exc.status_code, "http_error", message),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        logger.exception("unhandled error on %s", request.url.path)
        return JSONResponse(error_body(500, "internal", f"internal error: {type(exc).__name__}"), status_code=500)
