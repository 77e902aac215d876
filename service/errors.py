"""The error model: every failure a client can see is a ``ServiceError`` with a status and a code.

The same error travels as an HTTP response ``{"error": {"code", "message"}}`` with its status, or
as a WebSocket message ``{"type": "error", "seq": ..., "error": {...}}`` that leaves the stream
open. Codes are stable strings that clients can branch on; messages are for people.
"""

from __future__ import annotations

from typing import ClassVar, Literal


class ServiceError(Exception):
    """A failure with the HTTP status and machine-readable code the contract gives it."""

    status = 500
    code = "internal_error"
    # How the frame a request carried is counted (service.metrics.FrameTicket): the service
    # refused or failed it, or it was dropped for reasons outside it (load, a client gone).
    counted_as: ClassVar[Literal["failed", "dropped"]] = "failed"

    def __init__(
        self, message: str, *, code: str | None = None, retry_after_s: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        """Extra response headers (Retry-After for 429 and 503)."""
        return {} if self.retry_after_s is None else {"Retry-After": str(self.retry_after_s)}

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


class BadFrame(ServiceError):
    """Undecodable or inconsistent frame (empty, truncated, wrong raw byte count, bad seq)."""

    status = 400
    code = "bad_frame"


class Unauthorized(ServiceError):
    status = 401
    code = "unauthorized"


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    """The request contradicts a stream's state (another model, a second live connection)."""

    status = 409
    code = "conflict"


class BodyTimeout(ServiceError):
    """The request body did not arrive in time (stalled or trickling): the connection is closed."""

    status = 408
    code = "body_timeout"

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "Connection": "close"}


class ClientGone(ServiceError):
    """The client disconnected before its request was read: nobody is left to answer (499 is
    what the access log shows, after nginx's 'client closed request')."""

    status = 499
    code = "client_gone"
    counted_as = "dropped"


class TooLarge(ServiceError):
    """Body or frame beyond the configured limits (checked before decoding)."""

    status = 413
    code = "too_large"


class UnsupportedFormat(ServiceError):
    status = 415
    code = "unsupported_format"


class InvalidParameter(ServiceError):
    status = 422
    code = "invalid_parameter"


class Overloaded(ServiceError):
    """The service is full; the caller should retry after ``retry_after_s``."""

    status = 429
    code = "overloaded"
    counted_as = "dropped"


class NotAlive(ServiceError):
    """The inference worker is gone; only a restart helps (for /healthz)."""

    status = 503
    code = "not_alive"


class Unavailable(ServiceError):
    """The workers could not answer the frame now (a Redis outage, no worker in time); retry."""

    status = 503
    code = "unavailable"


class NotReady(ServiceError):
    """Models still loading or warming up, or shutting down."""

    status = 503
    code = "not_ready"


class InferenceFailed(ServiceError):
    """The model call or post-processing failed for this frame; the stream goes on."""

    status = 500
    code = "inference_error"
