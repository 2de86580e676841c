"""The model server's errors: one class carrying a gRPC status code, mapped to HTTP as TF Serving maps it.

TensorFlow Serving answers every failure with a ``tensorflow::Status``; its HTTP server turns the code
into an HTTP status (``model_servers/http_server.cc: ToHTTPStatusCode``) and its gRPC server sends the
code itself. :class:`ServingError` is that status here, so the REST and gRPC front ends share one
error path.
"""

from __future__ import annotations

from enum import Enum


class Code(Enum):
    """gRPC status codes, with the HTTP status TF Serving answers each with."""

    CANCELLED = (1, 499)
    UNKNOWN = (2, 500)
    INVALID_ARGUMENT = (3, 400)
    DEADLINE_EXCEEDED = (4, 504)
    NOT_FOUND = (5, 404)
    ALREADY_EXISTS = (6, 409)
    PERMISSION_DENIED = (7, 403)
    RESOURCE_EXHAUSTED = (8, 429)
    FAILED_PRECONDITION = (9, 400)
    ABORTED = (10, 409)
    OUT_OF_RANGE = (11, 400)
    UNIMPLEMENTED = (12, 501)
    INTERNAL = (13, 500)
    UNAVAILABLE = (14, 503)
    DATA_LOSS = (15, 500)
    UNAUTHENTICATED = (16, 401)

    @property
    def grpc(self) -> int:
        return self.value[0]

    @property
    def http(self) -> int:
        return self.value[1]


class ServingError(Exception):
    """A request the server cannot answer, with the status code that says why."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.inference_id: str | None = None  # the logged call it answers, once recorded


def invalid(message: str) -> ServingError:
    return ServingError(Code.INVALID_ARGUMENT, message)
