"""Exceptions that the HTTP layer turns into PVE-shaped error responses."""

from __future__ import annotations


class ApiError(Exception):
    """An error answered with `status`; the reason phrase is the message's first line."""

    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


class ParamError(ApiError):
    """PVE's raise_param_exc: always this fixed message, the details live in `errors`."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__(400, "Parameter verification failed.\n", errors)


def die(message: str) -> ApiError:
    """A plain Perl `die` inside an API handler: HTTP 500 with the text as message."""
    if not message.endswith("\n"):
        message += "\n"
    return ApiError(500, message)


class TaskError(Exception):
    """A worker died; the text becomes `TASK ERROR: <text>` (newlines folded like PVE)."""


class TaskExit(Exception):
    """A worker called exit() without dying: no TASK line, status 'unexpected status'."""
