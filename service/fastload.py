"""A faster ``schema.load`` for input that is valid, built from the marshmallow schema itself.

marshmallow spends most of a load in its own machinery (error stores, hook lookups, nested
schemas loaded through their fields), not in the checks. ``FastLoader(schema)`` walks the same
schema object once, at start, and keeps for each field what loading it takes: the field's own
``deserialize`` (its type conversion and validators, marshmallow's code), nested schemas and
lists of them walked directly, then the schema's ``@validates`` and ``@validates_schema`` hooks,
called the way marshmallow calls them. Nothing is written per field by hand, so a schema derived
from a catalogue, or a field added, is followed without change here.

The contract stays marshmallow's: at the first sign of a problem (an error, an unknown key, a
missing required field) the fast path gives up and ``schema.load`` runs on the same input, so an
invalid intake gets exactly marshmallow's errors. A schema feature the fast path does not model
(pre/post-load hooks, partial loading, dotted attributes, ``INCLUDE``) makes that schema, or that
field, go through marshmallow every time. tests/test_batch.py holds the two to the same output on
generated intakes, valid and not.
"""
from __future__ import annotations

from typing import Any, Callable

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, missing
from marshmallow.decorators import VALIDATES, VALIDATES_SCHEMA


class _GiveUp(Exception):
    """The fast path cannot vouch for this input: let marshmallow decide."""


_SUPPORTED_HOOKS = {VALIDATES, VALIDATES_SCHEMA}


def _compile(schema: Schema) -> Callable[[Any], dict] | None:
    """A loader for one schema, or None when the schema needs marshmallow itself."""
    hooks = {tag for tag, entries in schema._hooks.items() if entries}
    if hooks - _SUPPORTED_HOOKS or schema.unknown not in (RAISE, EXCLUDE):
        return None
    if any(many for _, many, _ in schema._hooks[VALIDATES_SCHEMA]):
        return None
    steps: list[tuple[str, str, Callable[[Any], Any]]] = []
    for name, field in schema.load_fields.items():
        attribute = field.attribute or name
        if "." in attribute:
            return None
        key = field.data_key if field.data_key is not None else name
        steps.append((key, attribute, _field_loader(field, key)))
    known = frozenset(key for key, _, _ in steps)
    raise_unknown = schema.unknown == RAISE
    field_hooks = []
    for attr_name, _, kwargs in schema._hooks[VALIDATES]:
        for field_name in kwargs["field_names"]:
            field = schema.fields.get(field_name)
            if field is None:
                return None
            key = field.data_key if field.data_key is not None else field_name
            field_hooks.append((getattr(schema, attr_name), field.attribute or field_name, key))
    schema_hooks = []
    for attr_name, _, kwargs in schema._hooks[VALIDATES_SCHEMA]:
        if kwargs.get("pass_original"):
            return None
        schema_hooks.append(getattr(schema, attr_name))
    unknown_option = schema.unknown

    def load(data: Any) -> dict:
        if not isinstance(data, dict):
            raise _GiveUp
        if raise_unknown and not known.issuperset(data):
            raise _GiveUp
        out: dict = {}
        for key, attribute, loader in steps:
            value = loader(data.get(key, missing), data)
            if value is not missing:
                out[attribute] = value
        for hook, attribute, key in field_hooks:
            if attribute in out:
                if hook(out[attribute], data_key=key) is missing:
                    raise _GiveUp
        for hook in schema_hooks:
            hook(out, partial=None, many=False, unknown=unknown_option)
        return out

    return load


def _field_loader(field: fields.Field, key: str) -> Callable[[Any], Any]:
    if isinstance(field, fields.Nested) and not field.many and field.only is None and not field.exclude:
        nested = field.schema
        inner = _compile(nested) if not nested.many and not nested.partial else None
        if inner is not None:
            def load_nested(value: Any, _parent: Any) -> Any:
                if value is missing or value is None:
                    return field.deserialize(value, key)  # required / allow_none, marshmallow's way
                result = inner(value)
                field._validate(result)
                return result
            return load_nested
    if isinstance(field, fields.List) and isinstance(field.inner, fields.Nested):
        item = _field_loader(field.inner, key)

        def load_list(value: Any, _parent: Any) -> Any:
            if value is missing or value is None or not isinstance(value, list):
                return field.deserialize(value, key)
            result = [item(v, value) for v in value]
            field._validate(result)
            return result
        return load_list

    # Field.deserialize without its error bookkeeping: the same steps for a value that passes
    # (missing and null handled as marshmallow does, the field's own conversion, then each of
    # its validators); anything else gives up, and marshmallow runs.
    convert = field._deserialize
    validators = tuple(field.validators)
    required, allow_none, has_default = field.required, field.allow_none, field.load_default is not missing

    def load_plain(value: Any, parent: Any) -> Any:
        if value is missing:
            if required:
                raise _GiveUp
            return field.deserialize(value, key, parent) if has_default else missing
        if value is None:
            if allow_none:
                return None
            raise _GiveUp
        out = convert(value, key, parent)
        for validator in validators:
            if validator(out) is False:
                raise _GiveUp
        return out
    return load_plain


class FastLoader:
    """``load(data)`` returns what ``schema.load(data)`` returns, or raises its ValidationError."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self._fast = _compile(schema)
        self.fast_loads = 0  # how often the fast path answered (for the benchmark and tests)

    def load(self, data: Any) -> dict:
        if self._fast is not None:
            try:
                result = self._fast(data)
            except (_GiveUp, ValidationError):
                pass  # marshmallow gives the errors, in its own words and order
            except (TypeError, ValueError, AttributeError):
                pass  # a value of a shape no field expected: marshmallow knows what to say
            else:
                self.fast_loads += 1
                return result
        return self.schema.load(data)
