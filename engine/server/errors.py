"""Errors in OpenAI's JSON shape: `{"error": {"message", "type", "param", "code"}}`.

A bad request (malformed JSON, a field of the wrong type or out of range, an unknown field or
model, a prompt that does not fit the context) is a 400 whose message names the field; a
request the engine failed while running is a 500 for that request alone.
"""
import json
import os

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error", 405: "invalid_request_error",
               500: "server_error", 503: "server_error"}


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


def error_body(status: int, message: str, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": None}}


def error_response(status: int, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param), status_code=status)


def sse_error(status: int, message: str) -> str:
    """The server-sent event that ends a stream whose request failed."""
    return f"data: {json.dumps(error_body(status, message))}\n\n"


def describe_validation_error(errors: list[dict]) -> tuple[str, str | None]:
    """(message, param) for the pydantic errors of a request body: the first field at fault.

    A field of several accepted types (a union) reports once per type; those are merged.
    """
    first = errors[0]
    kind = first["type"]
    if kind == "json_invalid":
        return f"the request body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}", None
    locs = [[str(part) for part in e["loc"] if part != "body"] for e in errors]
    if not locs[0] or kind == "model_attributes_type":
        return "the request body must be a JSON object", None
    same_field = [(loc, e) for loc, e in zip(locs, errors) if loc[0] == locs[0][0]]
    path = os.path.commonprefix([loc for loc, _ in same_field])  # works on lists too
    field, param = ".".join(path), path[0]
    if kind == "extra_forbidden":
        return f"unknown field '{field}': this server does not accept it", param
    if kind == "missing":
        return f"field '{field}' is required", param
    messages = dict.fromkeys(e["msg"].removeprefix("Value error, ") for _, e in same_field)
    return f"field '{field}': {' or '.join(messages)} (got {first.get('input')!r})", param


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(exc.status, exc.message, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _invalid_body(request: Request, exc: RequestValidationError):
        message, param = describe_validation_error(exc.errors())
        return error_response(400, message, param)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        # still a JSON error for the client; the server logs the traceback
        return error_response(500, f"internal server error: {type(exc).__name__}: {exc}")
