"""Every failure answered in OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}`.

One clear message per response. Library errors (`KupdateError`, `StoreError`) keep their text;
this module only decides the HTTP status: bad input 400, a busy server or store 503 with Retry-After.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from kupdate.errors import ConfigError, InputError, KBNotFound, KupdateError, StoreError, StoreLocked

TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
         405: "invalid_request_error", 413: "invalid_request_error", 503: "overloaded_error"}


class ApiError(KupdateError):
    """A request the server refuses, with its HTTP status and OpenAI error code."""

    status = 400
    code: str | None = None

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status = status or self.status
        self.code = code or self.code
        self.param = param


class ServerBusy(ApiError):
    """The request queue is full: retry after a moment."""

    status = 503
    code = "server_busy"


def error_body(status: int, message: str, *, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": TYPES.get(status, "server_error" if status >= 500 else
                                                             "invalid_request_error"),
                      "param": param, "code": code}}


def error_response(status: int, message: str, *, code: str | None = None, param: str | None = None,
                   retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse(error_body(status, message, code=code, param=param), status_code=status, headers=headers)


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """One line for the first problem pydantic found: what is wrong and where."""
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query")]
    where = ".".join(loc) or None
    kind = first.get("type", "")
    if kind == "json_invalid":
        ctx = first.get("ctx", {}).get("error", "")
        return f"the request body is not valid JSON ({ctx}); send one JSON object", None
    if kind == "extra_forbidden":
        return f"unknown field {where!r}; remove it (see the API's documented fields)", where
    if kind == "missing":
        if where is None:
            return "the request has no body; send a JSON object", None
        return f"missing field {where!r}", where
    if kind == "value_error":  # a check of the whole body (schemas' model validators)
        text = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        return (f"{where}: {text}" if where else text), where
    if where is None:
        return f"the request body must be a JSON object ({first.get('msg', 'invalid')})", None
    return f"{where}: {first.get('msg', 'invalid value')}", where


def status_of(exc: Exception) -> int:
    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, StoreLocked):
        return 503  # another writer holds the store: retrying later works
    if isinstance(exc, KBNotFound):
        return 404
    if isinstance(exc, (InputError, ConfigError, KupdateError)):
        return 400
    return 500  # a StoreError that is not the caller's fault


def install(app: FastAPI, retry_after: int) -> None:
    """Register the handlers that turn every error into OpenAI's shape."""

    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(list(exc.errors()))
        return error_response(400, message, param=param)

    async def on_http(request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}; see GET /v1/models and the docs"
        return error_response(exc.status_code, message)

    async def on_kupdate(request: Request, exc: Exception) -> JSONResponse:
        status = status_of(exc)
        code = getattr(exc, "code", None)
        return error_response(status, str(exc), code=code, param=getattr(exc, "param", None),
                              retry_after=retry_after if status == 503 else None)

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(KupdateError, on_kupdate)
    app.add_exception_handler(StoreError, on_kupdate)
