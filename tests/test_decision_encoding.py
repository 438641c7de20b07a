"""One encoding of a decision (service.decision.to_json): the C encoder with a hook for dates gives
the text ``json.dumps(jsonable(...))`` gave, for the response and for the decision log alike."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings

from service.decision import jsonable, to_json
from service.screening import screen
from tests.conftest import AS_OF, validated
from tests.strategies import intakes


@settings(max_examples=60, deadline=None)
@given(raw=intakes())
def test_to_json_is_the_text_of_json_dumps_of_jsonable(raw, ruleset):
    intake = validated(raw)
    decision = screen(intake, ruleset, as_of=AS_OF, explain=True)
    for value in (intake, decision.to_dict()):
        assert to_json(value) == json.dumps(jsonable(value))
        assert to_json(value, compact=True) == json.dumps(jsonable(value), separators=(",", ":"))


def test_to_json_refuses_what_json_refuses():
    with pytest.raises(TypeError):
        to_json({"a": {1, 2}})
