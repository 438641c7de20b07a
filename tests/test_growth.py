"""Large generated packs load, compile and decide exactly as the reference backend.

durable-rules fails an assert that fires more than 64 conditions and hangs compiling 512 or more
in one ruleset; the durable backend shards around both. These packs are generated (bench/packs.py),
written as YAML and read through the real loader and lint.
"""
from __future__ import annotations

import pytest

from bench.packs import AS_OF, intakes, write_pack
from schemas.intake import IntakeSchema
from service.engine import compile_rules
from service.engine.durable import SHARD_CONDITIONS
from service.policy import conditions as C
from service.ruleset import Ruleset, load_ruleset
from service.screening import screen


def _check(tmp_path, size: int) -> dict:
    ruleset = load_ruleset(write_pack(tmp_path / f"pack-{size}", size), "durable")
    assert len(ruleset.pack.rules) == size
    conditions = sum(C.alternatives(r.when) for r in ruleset.pack.rules)
    assert ruleset.compiled.shard_count >= conditions // SHARD_CONDITIONS // 2  # it really was sharded
    reference = compile_rules(ruleset.pack.rules, "reference")
    reference_set = Ruleset(ruleset.pack, reference)
    fired = {}
    for raw in intakes():
        intake = IntakeSchema().load(raw)
        got = ruleset.compiled.match(intake, AS_OF)
        assert got == reference.match(intake, AS_OF), raw["subject_id"]
        fired[raw["subject_id"]] = len(got.fired)
    hot = IntakeSchema().load(intakes()[0])
    decision, expected = screen(hot, ruleset, as_of=AS_OF), screen(hot, reference_set, as_of=AS_OF)
    assert decision.decision == expected.decision == "ineligible"
    assert decision.reason_ids == expected.reason_ids
    assert [f.finding for f in decision.findings] == [f.finding for f in expected.findings]
    return fired


def test_a_100_rule_pack_fires_beyond_one_assert_limit(tmp_path):
    fired = _check(tmp_path, 100)
    assert fired["hot"] > 64  # more than one durable-rules assert may fire


def test_a_5000_rule_pack_loads_and_decides_like_the_reference_backend(tmp_path):
    fired = _check(tmp_path, 5000)
    assert fired["hot"] >= 1000  # an intake that triggers thousands of rules at once
    assert fired["nasal"] >= 500 and 0 < fired["clean"] < fired["hot"]


@pytest.mark.slow
def test_a_20000_rule_pack_still_decides_like_the_reference_backend(tmp_path):
    fired = _check(tmp_path, 20000)
    assert fired["hot"] >= 4000
