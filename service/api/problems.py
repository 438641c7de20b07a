"""The API's name for the shared error model (service.errors; mapped to responses in service.http_io)."""
from __future__ import annotations

from service.errors import ServiceError, validation_error

# The JSON API raises the channel-neutral error; the name reads as what it is here.
ApiError = ServiceError

__all__ = ["ApiError", "validation_error"]
