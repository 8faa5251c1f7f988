"""The server's one error type and its one body: every error is JSON
{"error": message, "model_version": ...} with an exact status, and headers where HTTP wants
them (Allow on 405, Retry-After on 503)."""

import json

import orjson
from starlette import responses

RETRY_AFTER = "1"  # seconds: a 503 for memory or draining is worth retrying soon
OUT_OF_MEMORY = "the server is out of memory; retry later"


class ApiError(Exception):
    """An error answered as JSON {"error": message} with an exact HTTP status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def out_of_memory() -> ApiError:
    """503 for an allocation that failed: the server's state, not the client's request."""
    return ApiError(503, OUT_OF_MEMORY, {"Retry-After": RETRY_AFTER})


def dumps(content) -> bytes:
    """`content` as compact JSON bytes; what orjson refuses (a lone surrogate that a client's
    JSON escaped, an int over 64 bits) falls back to json.dumps with ASCII escapes, never a
    500."""
    try:
        return orjson.dumps(content)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(content, separators=(",", ":")).encode()


def body(message: str, version: str | None) -> bytes:
    """The one error body."""
    return dumps({"error": message, "model_version": version})


class JSONResponse(responses.JSONResponse):
    """Starlette's JSONResponse, rendered by orjson (several times faster than json.dumps)."""

    def render(self, content) -> bytes:
        return dumps(content)
