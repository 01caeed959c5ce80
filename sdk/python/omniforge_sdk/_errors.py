from __future__ import annotations


class OmniforgeError(Exception):
    """Base class of every error this SDK raises."""


class APIConnectionError(OmniforgeError):
    """The gateway could not be reached."""


class APIError(OmniforgeError):
    """The gateway answered with an error."""

    def __init__(self, message: str, *, status_code: int, code: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status_code} {code}: {message}")
        self.message, self.status_code, self.code, self.retry_after = message, status_code, code, retry_after


class BadRequestError(APIError):
    """400/415/422: the request was malformed; the message says what to send."""


class AuthenticationError(APIError):
    """401: no API key, or not a valid one."""


class PermissionDeniedError(APIError):
    """403: the key's scopes do not cover the route."""


class NotFoundError(APIError):
    """404: unknown model or route."""


class RateLimitError(APIError):
    """429."""


class TimeoutError_(APIError):
    """504: generation exceeded the gateway's deadline."""


class ServiceUnavailableError(APIError):
    """503: a model service is down; `retry_after` says when to try again."""


class InternalServerError(APIError):
    """5xx other than 503/504."""


def error_for(status: int, body: dict | None, headers) -> APIError:
    err = (body or {}).get("error", {}) if isinstance(body, dict) else {}
    message = err.get("message") or f"HTTP {status}"
    code = err.get("code") or "error"
    retry = headers.get("retry-after")
    kwargs = dict(status_code=status, code=code, retry_after=float(retry) if retry else None)
    if status in (400, 415, 422):
        return BadRequestError(message, **kwargs)
    if status == 401:
        return AuthenticationError(message, **kwargs)
    if status == 403:
        return PermissionDeniedError(message, **kwargs)
    if status == 404:
        return NotFoundError(message, **kwargs)
    if status == 429:
        return RateLimitError(message, **kwargs)
    if status == 503:
        return ServiceUnavailableError(message, **kwargs)
    if status == 504:
        return TimeoutError_(message, **kwargs)
    if status >= 500:
        return InternalServerError(message, **kwargs)
    return APIError(message, **kwargs)
