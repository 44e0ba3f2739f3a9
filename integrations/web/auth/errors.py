"""Refusals of credentials, as OpenAI's API words them, so its clients raise their own errors.

401 ``{"error": {"message", "type": "invalid_request_error", "param": null, "code":
"invalid_api_key"}}`` with ``WWW-Authenticate: Bearer`` (RFC 6750 §3), the shape
https://platform.openai.com/docs/guides/error-codes documents; the official clients map 401 to
``AuthenticationError`` whatever the body says.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


class AuthError(Exception):
    """A request without an acceptable credential (raised before anything is queued)."""

    def __init__(self, status: int, message: str, code: str = "invalid_api_key") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def install(app: FastAPI) -> None:
    async def on_auth_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AuthError)
        body = {"error": {"message": exc.message, "type": "invalid_request_error",
                          "param": None, "code": exc.code}}
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(body, status_code=exc.status, headers=headers)

    app.add_exception_handler(AuthError, on_auth_error)
