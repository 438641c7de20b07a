"""The API's request bodies: read strictly (service.http_io, service.intake_reader) and validated."""
from __future__ import annotations

from flask import current_app, request
from marshmallow import Schema, ValidationError

from service.errors import validation_error
from service.http_io import read_json_request
from service.intake_reader import Limits


def load_body(schema: Schema, what: str) -> dict:
    """The request's JSON body, read strictly and validated by ``schema``: 4xx JSON errors that
    name every field path at fault, with the app's body limits."""
    raw = read_json_request(request, Limits.of(current_app.extensions["settings"]))
    try:
        return schema.load(raw)
    except ValidationError as exc:
        raise validation_error(exc, f"The {what} is not valid.") from None
