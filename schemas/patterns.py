"""Text patterns that must match the *whole* value.

``re.match`` with a pattern ending in ``$`` accepts a trailing newline (``"pt-1\\n"``), and
marshmallow's ``validate.Regexp`` uses ``re.match``: a value stored that way cannot be found
again by its visible text. ``FullMatch`` is ``validate.Regexp`` with ``fullmatch``; its pattern
keeps ``^...$`` so the OpenAPI and JSON Schema ``pattern`` (ECMA-262, where ``$`` is the end of
the input) says the same thing. Everywhere else in the code base patterns are used with
``re.fullmatch`` (tests/test_hardening.py checks the sources).
"""
from __future__ import annotations

from marshmallow import ValidationError, validate


class FullMatch(validate.Regexp):
    def __call__(self, value: str) -> str:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


# The identifiers every channel checks, defined once: an intake's subject reference (1-64
# characters; schemas.intake), and a decision id (a UUID when this service makes it; the log,
# the API and the pages accept the same characters so that whatever was stored can be found).
SUBJECT_ID = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}"
DECISION_ID = r"[A-Za-z0-9._:-]{1,64}"
